package readnode

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/jetcqrs/jetcqrs/projections/lifecycle"
)

// FileRecord is a lifecycle.Record kept in a bbolt file of the read node's
// data directory: the generations of the models this node keeps itself,
// which no other process shares. Each Put is one fsynced transaction, so a
// process killed at any point reopens to the last state it recorded.
type FileRecord struct {
	db *bolt.DB

	mu       sync.Mutex
	watchers map[chan lifecycle.Change]struct{}
}

var _ lifecycle.Record = (*FileRecord)(nil)

var recordBucket = []byte("models")

// OpenFileRecord opens (creating it if needed) the record at path.
func OpenFileRecord(path string) (*FileRecord, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
	if err != nil {
		return nil, fmt.Errorf("readnode: record %s: %w (is another read node using this data directory?)", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(recordBucket)
		return err
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("readnode: record %s: %w", path, err)
	}
	return &FileRecord{db: db, watchers: map[chan lifecycle.Change]struct{}{}}, nil
}

// Close releases the file.
func (r *FileRecord) Close() error { return r.db.Close() }

// A record value is the revision (8 bytes, big endian) then the State as JSON.
func decodeRecord(v []byte) (lifecycle.State, uint64, error) {
	if len(v) < 8 {
		return lifecycle.State{}, 0, errors.New("truncated record")
	}
	var s lifecycle.State
	if err := json.Unmarshal(v[8:], &s); err != nil {
		return lifecycle.State{}, 0, err
	}
	return s, binary.BigEndian.Uint64(v), nil
}

// Get implements lifecycle.Record.
func (r *FileRecord) Get(ctx context.Context, model string) (lifecycle.State, uint64, error) {
	if err := ctx.Err(); err != nil {
		return lifecycle.State{}, 0, err
	}
	st, rev := lifecycle.State{Live: 1}, uint64(0)
	err := r.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(recordBucket).Get([]byte(model))
		if v == nil {
			return nil
		}
		var err error
		st, rev, err = decodeRecord(v)
		return err
	})
	if err != nil {
		return lifecycle.State{}, 0, fmt.Errorf("readnode: record of %s: %w", model, err)
	}
	return st, rev, nil
}

// Put implements lifecycle.Record.
func (r *FileRecord) Put(ctx context.Context, model string, s lifecycle.State, revision uint64) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	body, err := json.Marshal(s)
	if err != nil {
		return 0, err
	}
	var rev uint64
	err = r.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(recordBucket)
		var cur uint64
		if v := b.Get([]byte(model)); v != nil {
			if _, cur, err = decodeRecord(v); err != nil {
				return err
			}
		}
		if cur != revision {
			return fmt.Errorf("%w: %s", lifecycle.ErrChanged, model)
		}
		rev = cur + 1
		return b.Put([]byte(model), append(binary.BigEndian.AppendUint64(nil, rev), body...))
	})
	if err != nil {
		if errors.Is(err, lifecycle.ErrChanged) {
			return 0, err
		}
		return 0, fmt.Errorf("readnode: record %s: %w", model, err)
	}
	r.mu.Lock()
	for ch := range r.watchers {
		select {
		case ch <- lifecycle.Change{Model: model, State: s}:
		default: // a watcher that does not keep up re-reads on its next change
		}
	}
	r.mu.Unlock()
	return rev, nil
}

// Watch implements lifecycle.Record: the current states, Ready, then every
// later Put of this process.
func (r *FileRecord) Watch(ctx context.Context, fn func(lifecycle.Change)) error {
	ch := make(chan lifecycle.Change, 64)
	r.mu.Lock()
	r.watchers[ch] = struct{}{}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.watchers, ch)
		r.mu.Unlock()
	}()
	var current []lifecycle.Change
	err := r.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(recordBucket).ForEach(func(k, v []byte) error {
			s, _, err := decodeRecord(v)
			if err != nil {
				return err
			}
			current = append(current, lifecycle.Change{Model: string(k), State: s})
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("readnode: watch record: %w", err)
	}
	for _, c := range current {
		fn(c)
	}
	fn(lifecycle.Change{Ready: true})
	for {
		select {
		case <-ctx.Done():
			return nil
		case c := <-ch:
			fn(c)
		}
	}
}
