// Package redisstore keeps the order summary and inventory read models in
// Redis. Every key lives under a prefix that names the read-model generation
// (for example "jetcqrs:g1:"), so a rebuild writes a new generation beside the
// live one and the old one is dropped after the switch.
//
// Each read-model key is a hash that stores, with its data, the version of
// its aggregate and the stream sequence of the event it was last written
// from. One Lua script writes a key only when the event carries a newer
// aggregate version than the stored one: an older event (redelivered,
// replayed, or re-published after the stream's duplicate window, with a new
// and higher sequence) never rolls a key back, and one of the same version is
// the same event and changes nothing, down to the bytes. A batch is one
// pipeline: one round trip.
package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/jetcqrs/jetcqrs/projections"
)

// Fields the script writes itself: the aggregate version that guards a key,
// and the stream sequence of the event that wrote it (to trace a key back to
// the stream; it decides nothing).
const (
	versionField = "version"
	seqField     = "seq"
)

// Modes of applyScript.
const (
	modeNewer  = "newer"  // write when the event's version is above the stored one
	modeAbsent = "absent" // write only when the key does not exist
)

// applyScript writes a batch of hashes, KEYS[1..n], in order. ARGV holds,
// for each key, its mode, the event's aggregate version, its stream
// sequence, the number of field/value arguments that follow and those
// arguments. A hash is written (with its version and sequence) only under
// the rule of its mode. Versions are canonical decimal strings of
// non-negative integers, compared by length, then bytes: exact where Lua's
// doubles are not. It returns how many hashes it wrote.
//
// One call per batch rather than per key: the fixed cost of a script call
// (lookup, argument parsing, one reply) is most of the cost of a guarded
// write. Redis Cluster takes keys of one slot per call only, so there each
// call carries one key (see keysPerCall).
var applyScript = redis.NewScript(`
local written, a = 0, 1
for i = 1, #KEYS do
	local key, mode, version, seq, n = KEYS[i], ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
	local write
	if mode == '` + modeAbsent + `' then
		write = redis.call('EXISTS', key) == 0
	else
		local cur = redis.call('HGET', key, '` + versionField + `')
		write = not cur or #cur < #version or (#cur == #version and cur < version)
	end
	if write then
		redis.call('HSET', key, '` + versionField + `', version, '` + seqField + `', seq, unpack(ARGV, a + 4, a + 3 + n))
		written = written + 1
	end
	a = a + 4 + n
end
return written
`)

// hashWrite is one guarded write of a read-model hash.
type hashWrite struct {
	key     string
	mode    string
	version int64
	seq     uint64
	fields  []string // field, value, field, value, … (besides version and seq)
}

// maxKeysPerCall bounds one script call, and so how long it holds the server.
const maxKeysPerCall = 512

// keysPerCall is how many keys one applyScript call may carry for client.
func keysPerCall(client redis.UniversalClient) int {
	if _, cluster := client.(*redis.ClusterClient); cluster {
		return 1
	}
	return maxKeysPerCall
}

// queueHashWrites queues writes, in order, as applyScript calls of at most
// perCall keys each.
func queueHashWrites(ctx context.Context, pipe redis.Pipeliner, writes []hashWrite, perCall int) {
	for len(writes) > 0 {
		n := min(len(writes), perCall)
		keys := make([]string, n)
		args := make([]any, 0, n*13)
		for i, w := range writes[:n] {
			keys[i] = w.key
			args = append(args, w.mode, strconv.FormatInt(w.version, 10), strconv.FormatUint(w.seq, 10), len(w.fields))
			for _, f := range w.fields {
				args = append(args, f)
			}
		}
		applyScript.EvalSha(ctx, pipe, keys, args...)
		writes = writes[n:]
	}
}

// queueFunc queues the commands of a batch on a pipeline.
type queueFunc func(pipe redis.Pipeliner)

// execBatch runs the commands queue adds in one pipeline. The commands are
// idempotent, so when the server has lost the script (a restart or SCRIPT
// FLUSH empties its cache), the script is loaded again and the whole pipeline
// re-run.
func execBatch(ctx context.Context, client redis.UniversalClient, queue queueFunc) error {
	const attempts = 3
	for attempt := 1; ; attempt++ {
		cmds, execErr := client.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			queue(pipe)
			return nil
		})
		noScript := false
		for _, cmd := range cmds {
			err := cmd.Err()
			switch {
			case err == nil:
			case redis.HasErrorPrefix(err, "NOSCRIPT"):
				noScript = true
			case rejected(err):
				return fmt.Errorf("%s: %w: %w", cmd.Name(), projections.ErrRejected, withReply(err))
			default:
				return fmt.Errorf("%s: %w", cmd.Name(), withReply(err))
			}
		}
		if !noScript {
			if execErr != nil {
				return fmt.Errorf("pipeline: %w", withReply(execErr))
			}
			return nil
		}
		if attempt == attempts {
			return fmt.Errorf("evalsha: script still missing after %d loads", attempts-1)
		}
		if err := applyScript.Load(ctx, client).Err(); err != nil {
			return fmt.Errorf("script load: %w", withReply(err))
		}
	}
}

// permanentReplies are the error replies in which the server refuses a
// command for what it carries, so that sending it again cannot succeed. Any
// other reply (MISCONF, LOADING, OOM, NOAUTH, NOPERM, READONLY, ERR max
// number of clients reached, …) is a state of the server or its
// configuration, and a retry outlives it once it is fixed; dead-lettering on
// it would silently empty the stream into the dead-letter stream.
var permanentReplies = []string{
	"WRONGTYPE",                               // a key of another type holds the model's name
	"ERR Error running script",                // a Lua error in the script (Redis 6)
	"ERR user_script:",                        // a Lua error in the script (Redis 7)
	"ERR string exceeds maximum allowed size", // a value above proto-max-bulk-len
}

// rejected reports an error reply in which the server refused a command for
// what it carries (see permanentReplies).
func rejected(err error) bool {
	var reply redis.Error
	if !errors.As(err, &reply) {
		return false
	}
	for _, p := range permanentReplies {
		if strings.HasPrefix(reply.Error(), p) {
			return true
		}
	}
	return false
}

// withReply marks an error reply with its code, the reply's first word (two
// for a generic ERR, as in ERR_max), for the runtime's metrics.
func withReply(err error) error {
	var reply redis.Error
	if !errors.As(err, &reply) {
		return err
	}
	words := strings.Fields(reply.Error())
	if len(words) == 0 {
		return err
	}
	code := words[0]
	if code == "ERR" && len(words) > 1 {
		code += "_" + words[1]
	}
	return projections.WithReply(code, err)
}

// dropKeys deletes every key that matches one of the glob patterns, on every
// master when the client is a cluster. Keys go one per UNLINK: in a cluster,
// keys of several slots cannot share a command.
func dropKeys(ctx context.Context, client redis.UniversalClient, patterns ...string) error {
	drop := func(ctx context.Context, node redis.UniversalClient) error {
		for _, pattern := range patterns {
			iter := node.Scan(ctx, 0, pattern, 1000).Iterator()
			var keys []string
			flush := func() error {
				if len(keys) == 0 {
					return nil
				}
				_, err := node.Pipelined(ctx, func(pipe redis.Pipeliner) error {
					for _, k := range keys {
						pipe.Unlink(ctx, k)
					}
					return nil
				})
				keys = keys[:0]
				return err
			}
			for iter.Next(ctx) {
				if keys = append(keys, iter.Val()); len(keys) == 1000 {
					if err := flush(); err != nil {
						return err
					}
				}
			}
			if err := iter.Err(); err != nil {
				return err
			}
			if err := flush(); err != nil {
				return err
			}
		}
		return nil
	}
	if cluster, ok := client.(*redis.ClusterClient); ok {
		return cluster.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			return drop(ctx, node)
		})
	}
	return drop(ctx, client)
}

// globEscape quotes the SCAN MATCH metacharacters of s.
func globEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`, `]`, `\]`).Replace(s)
}

// markerKey is the key, under a generation's prefix, that records that the
// generation of a model was created: when a model's keys vanish with their
// marker (a restart without persistence, a FLUSHALL), the projector can tell
// the loss from a model that was never written.
func markerKey(prefix, model string) string { return prefix + "meta:" + model + ":created" }

func mark(ctx context.Context, client redis.UniversalClient, key string) error {
	if err := client.Set(ctx, key, "1", 0).Err(); err != nil {
		return fmt.Errorf("redisstore: mark %s: %w", key, err)
	}
	return nil
}

func marked(ctx context.Context, client redis.UniversalClient, key string) (bool, error) {
	n, err := client.Exists(ctx, key).Result()
	if err != nil {
		return false, fmt.Errorf("redisstore: %s: %w", key, err)
	}
	return n == 1, nil
}
