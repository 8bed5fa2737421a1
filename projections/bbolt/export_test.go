package boltstore

import (
	"fmt"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// Dump renders every key and value of the model's data buckets, in key
// order, for tests that compare stores byte for byte. The checkpoints and
// the marker are left out: they record where a store came from, not what it
// holds.
func (f *file) Dump() (string, error) {
	var b strings.Builder
	err := f.db.View(func(tx *bolt.Tx) error {
		for _, name := range f.buckets {
			fmt.Fprintf(&b, "[%s]\n", name)
			if err := tx.Bucket(name).ForEach(func(k, v []byte) error {
				fmt.Fprintf(&b, "%q = %x\n", k, v)
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	return b.String(), err
}
