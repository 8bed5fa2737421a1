// Package boltstore keeps the order summary, inventory and sales read models
// in embedded bbolt files, for a process that should need nothing but its
// binary and a disk: one file per model and generation, opened by that
// process alone.
//
// bbolt rather than Pebble: a read model has one writer at a time and is read
// far more than it is written, which is bbolt's shape (one serialized write
// transaction, readers on a memory-mapped B+tree that never wait for it);
// its keys are ordered, so a user's orders are one cursor walk, newest first;
// and every commit is fsynced behind copy-on-write pages, so a process killed
// at any instruction reopens to the last committed transaction, with no
// write-ahead log or compaction to tune. Pebble's LSM tree would buy write
// throughput a projection does not need at the price of background
// compactions and a larger dependency.
//
// Each store applies a batch in one transaction, under the same rules as the
// Redis stores: a key is written only when the event carries a newer
// aggregate version than the one it holds, so an older event (redelivered,
// replayed, or re-published under a new sequence) never rolls it back, and
// one of the same version writes nothing. ApplyPartition records, in the same
// transaction, the last stream sequence applied for the partition that
// delivered the batch: a process that reads the stream itself resumes from
// Checkpoint, and what it finds there always agrees with the data.
package boltstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/jetcqrs/jetcqrs/projections"
)

// Buckets every model file has besides its data.
var (
	metaBucket       = []byte("meta")
	checkpointBucket = []byte("checkpoint")
	modelKey         = []byte("model")   // which model the file holds
	createdKey       = []byte("created") // Mark's record
)

// lockTimeout bounds the wait for a file another process holds open.
const lockTimeout = 2 * time.Second

// file is one model's bbolt file: the parts every model shares.
type file struct {
	db      *bolt.DB
	model   string
	buckets [][]byte // the model's data buckets
}

// openFile opens (creating it and its directory if needed) the file at path
// for model, whose data lives in buckets. A file written for another model is refused.
func openFile(path, model string, buckets ...[]byte) (*file, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
	if err != nil {
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	f := &file{db: db, model: model, buckets: buckets}
	if err := db.Update(f.ensure); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	return f, nil
}

// ensure creates the file's buckets and records its model.
func (f *file) ensure(tx *bolt.Tx) error {
	meta, err := tx.CreateBucketIfNotExists(metaBucket)
	if err != nil {
		return err
	}
	switch held := meta.Get(modelKey); {
	case held == nil:
		if err := meta.Put(modelKey, []byte(f.model)); err != nil {
			return err
		}
	case string(held) != f.model:
		return fmt.Errorf("the file holds the %s model, not %s", held, f.model)
	}
	for _, name := range append([][]byte{checkpointBucket}, f.buckets...) {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	return nil
}

// apply runs write in one write transaction and, when partition is not
// negative, raises the partition's checkpoint to the sequence write reports
// in the same transaction. write returns the sequence of the last event it
// applied (0 for none) and the poison error that stopped it, if any: the
// events before the poison one are committed, and the checkpoint with them.
func (f *file) apply(ctx context.Context, partition int, write func(tx *bolt.Tx) (uint64, error)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var poison *projections.PoisonError
	err := f.db.Update(func(tx *bolt.Tx) error {
		last, err := write(tx)
		if err != nil && !errors.As(err, &poison) {
			return err // a write failed: roll the batch back
		}
		if partition >= 0 && last > 0 {
			return raiseCheckpoint(tx, partition, last)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("boltstore: apply %s: %w", f.model, classify(err))
	}
	if poison != nil {
		return poison
	}
	return nil
}

// classify marks the bbolt errors that name what an event carries (a key or
// value too large for the engine) as rejections: applying the event again
// cannot succeed. Anything else (a full disk, an I/O error, a closed file)
// is a state of the machine, which a retry outlives.
func classify(err error) error {
	if errors.Is(err, berrors.ErrKeyTooLarge) || errors.Is(err, berrors.ErrValueTooLarge) || errors.Is(err, berrors.ErrKeyRequired) {
		return fmt.Errorf("%w: %w", projections.ErrRejected, err)
	}
	return err
}

func partitionKey(partition int) []byte { return binary.BigEndian.AppendUint32(nil, uint32(partition)) }

func raiseCheckpoint(tx *bolt.Tx, partition int, seq uint64) error {
	b := tx.Bucket(checkpointBucket)
	key := partitionKey(partition)
	if cur := b.Get(key); cur != nil && binary.BigEndian.Uint64(cur) >= seq {
		return nil
	}
	return b.Put(key, binary.BigEndian.AppendUint64(nil, seq))
}

// Checkpoint returns the last stream sequence recorded for partition, 0 when
// none: the data holds every event of the partition up to it, and none after.
func (f *file) Checkpoint(ctx context.Context, partition int) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var seq uint64
	err := f.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(checkpointBucket).Get(partitionKey(partition)); v != nil {
			seq = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("boltstore: %s checkpoint of partition %d: %w", f.model, partition, err)
	}
	return seq, nil
}

// Advance raises partition's checkpoint to seq (never lowers it) without
// applying anything: for an event its reader settled elsewhere, such as a
// poison event it dead-lettered, so that a restart does not read it again.
func (f *file) Advance(ctx context.Context, partition int, seq uint64) error {
	return f.apply(ctx, partition, func(*bolt.Tx) (uint64, error) { return seq, nil })
}

// Mark records that this generation of the model exists (see Marked).
func (f *file) Mark(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := f.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(metaBucket).Put(createdKey, []byte("1")) }); err != nil {
		return fmt.Errorf("boltstore: mark %s: %w", f.model, err)
	}
	return nil
}

// Marked reports whether Mark's record is there: false for a file never
// marked, or one created anew where the marked one was lost.
func (f *file) Marked(ctx context.Context) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	var ok bool
	err := f.db.View(func(tx *bolt.Tx) error {
		ok = tx.Bucket(metaBucket).Get(createdKey) != nil
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("boltstore: %s marker: %w", f.model, err)
	}
	return ok, nil
}

// Drop deletes the model's data, its checkpoints and its marker in one
// transaction; the store stays open, empty.
func (f *file) Drop(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := f.db.Update(func(tx *bolt.Tx) error {
		for _, name := range append([][]byte{checkpointBucket}, f.buckets...) {
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
		}
		if err := tx.Bucket(metaBucket).Delete(createdKey); err != nil {
			return err
		}
		return f.ensure(tx)
	})
	if err != nil {
		return fmt.Errorf("boltstore: drop %s: %w", f.model, err)
	}
	return nil
}

// Close releases the file; the store cannot be used after it.
func (f *file) Close() error {
	if err := f.db.Close(); err != nil {
		return fmt.Errorf("boltstore: close %s: %w", f.model, err)
	}
	return nil
}

// versionedHeader is the head of every versioned record: the aggregate
// version that guards it and the stream sequence of the event that wrote it
// (to trace a record back to the stream; it decides nothing).
const versionedHeader = 16

func putHeader(buf []byte, version int64, seq uint64) []byte {
	buf = binary.BigEndian.AppendUint64(buf, uint64(version))
	return binary.BigEndian.AppendUint64(buf, seq)
}

// storedVersion is the version a record holds; ok is false when there is none.
func storedVersion(record []byte) (version int64, ok bool) {
	if len(record) < versionedHeader {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(record)), true
}
