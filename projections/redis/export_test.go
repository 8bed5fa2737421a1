package redisstore

// WithKeysPerCall sets how many keys one script call carries, so that the
// tests can run the chunking a Redis Cluster client gets (one key per call)
// and a batch split over several calls.
func (s *OrderStore) WithKeysPerCall(n int) *OrderStore { s.perCall = n; return s }

// WithKeysPerCall: see OrderStore.WithKeysPerCall.
func (s *InventoryStore) WithKeysPerCall(n int) *InventoryStore { s.perCall = n; return s }
