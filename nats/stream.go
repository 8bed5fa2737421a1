package nats

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream defaults.
const (
	DefaultStreamName      = "EVENTS"
	DefaultPartitions      = 16
	DefaultDuplicateWindow = 2 * time.Minute

	DefaultDeadLetterStreamName = "DLQ"
	DefaultDeadLetterMaxAge     = 90 * 24 * time.Hour

	// PartitionsMetadataKey is the stream metadata key recording the
	// partition count the stream was created with.
	PartitionsMetadataKey = "jetcqrs.partitions"

	// MaxPartitions bounds the partition count; each partition costs one
	// consumer per projection.
	MaxPartitions = 1024
)

// ErrStreamLimits is matched by the error EnsureStream returns for an
// EVENTS stream that would drop events: a maximum age, size or message count
// (per subject too), or discard-new. Read models are rebuilt by replaying the
// whole stream, so an event the stream dropped is lost for good.
var ErrStreamLimits = errors.New("nats: the event stream has limits")

// ErrPartitionMismatch is matched by the *PartitionMismatchError EnsureStream
// returns when the stream exists with another partition count.
var ErrPartitionMismatch = errors.New("nats: partition count mismatch")

// PartitionMismatchError reports that a stream was created with a different
// partition count than configured. The count is fixed for the life of the
// stream: changing it would move aggregates to other partitions and break
// per-aggregate order for events already published.
type PartitionMismatchError struct {
	Stream     string
	Existing   int // recorded in the stream's metadata
	Configured int
}

func (e *PartitionMismatchError) Error() string {
	return fmt.Sprintf("nats: stream %s was created with %d partitions but %d are configured; "+
		"the partition count cannot change for an existing stream (set partitions to %d, "+
		"or re-create the stream and re-publish its events)",
		e.Stream, e.Existing, e.Configured, e.Existing)
}

// Unwrap makes errors.Is(err, ErrPartitionMismatch) true.
func (e *PartitionMismatchError) Unwrap() error { return ErrPartitionMismatch }

// StreamConfig configures the EVENTS stream. Zero fields take defaults. The
// stream has no limits: it is the event log every read model is rebuilt
// from, so it keeps every event (see ErrStreamLimits).
type StreamConfig struct {
	Name string // default "EVENTS"
	// Subjects the stream binds; default ["events.>"]. It must include
	// "events.>", where Subject puts every event.
	Subjects []string
	// Partitions is P in partition = hash(aggregate id) mod P. Default 16.
	// Fixed when the stream is created (recorded in its metadata).
	Partitions int
	// DuplicateWindow is how long JetStream remembers Nats-Msg-Ids to drop
	// re-published events. Default 2m. Mutable.
	DuplicateWindow time.Duration
	// Replicas the stream is created with (default 1; ClusterReplicas
	// picks them for the server). An existing stream keeps its count:
	// RaiseReplicas raises it, and nothing here lowers it.
	Replicas int
}

func (c StreamConfig) withDefaults() StreamConfig {
	if c.Name == "" {
		c.Name = DefaultStreamName
	}
	if len(c.Subjects) == 0 {
		c.Subjects = []string{SubjectRoot + ".>"}
	}
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	return c
}

// Validate reports the first invalid field, after defaults are applied.
func (c StreamConfig) Validate() error {
	c = c.withDefaults()
	if c.Partitions < 1 || c.Partitions > MaxPartitions {
		return fmt.Errorf("nats: StreamConfig.Partitions %d out of range 1-%d", c.Partitions, MaxPartitions)
	}
	if !slices.Contains(c.Subjects, SubjectRoot+".>") {
		return fmt.Errorf("nats: StreamConfig.Subjects %q must include %s.>, the subjects events are published on", c.Subjects, SubjectRoot)
	}
	return validateStreamLimits("StreamConfig", c.Name, c.Subjects, c.DuplicateWindow, c.Replicas, 0, 0)
}

func (c StreamConfig) jetstream() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        c.Name,
		Description: "jetcqrs domain events: " + SubjectRoot + ".<aggregate_type>.<partition>.<event_type>",
		Subjects:    c.Subjects,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
		Duplicates:  c.DuplicateWindow,
		MaxBytes:    -1,
		MaxMsgs:     -1,
		Metadata:    map[string]string{PartitionsMetadataKey: strconv.Itoa(c.Partitions)},
	}
}

// EnsureStream creates the EVENTS stream (file storage) if it does not
// exist, at cfg.Replicas, recording cfg.Partitions in its metadata, and
// otherwise brings the mutable settings (subjects, duplicate window) in line
// with cfg; its replicas are RaiseReplicas's. It is idempotent and safe to
// run concurrently from several processes.
//
// It refuses a stream with limits (ErrStreamLimits): it does not lift them,
// since an operator set them and events may already be gone.
//
// It refuses, with a *PartitionMismatchError (errors.Is ErrPartitionMismatch),
// a stream created with another partition count, and with a plain error a
// non-empty stream that records no partition count or is not on file
// storage. An empty stream without the metadata is adopted.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return ensureStream(ctx, js, cfg.jetstream(), func(info *jetstream.StreamInfo) error {
		if err := checkNoLimits(info); err != nil {
			return err
		}
		recorded, ok := info.Config.Metadata[PartitionsMetadataKey]
		if !ok {
			if info.State.Msgs == 0 && info.State.LastSeq == 0 {
				return nil // empty: safe to adopt, the update records the count
			}
			return fmt.Errorf("nats: stream %s holds %d messages but its metadata has no %s, so the partitioning "+
				"of its subjects is unknown; add the key (nats stream edit %s --metadata %s=<P>) or re-create the stream",
				cfg.Name, info.State.Msgs, PartitionsMetadataKey, cfg.Name, PartitionsMetadataKey)
		}
		n, err := strconv.Atoi(recorded)
		if err != nil || n < 1 {
			return fmt.Errorf("nats: stream %s metadata %s=%q is not a positive integer", cfg.Name, PartitionsMetadataKey, recorded)
		}
		if n != cfg.Partitions {
			return &PartitionMismatchError{Stream: cfg.Name, Existing: n, Configured: cfg.Partitions}
		}
		return nil
	})
}

// checkNoLimits refuses an event stream that can drop events.
func checkNoLimits(info *jetstream.StreamInfo) error {
	c := info.Config
	var limits []string
	if c.MaxAge > 0 {
		limits = append(limits, fmt.Sprintf("max age %s (--max-age=0)", c.MaxAge))
	}
	if c.MaxBytes > 0 {
		limits = append(limits, fmt.Sprintf("max bytes %d (--max-bytes=-1)", c.MaxBytes))
	}
	if c.MaxMsgs > 0 {
		limits = append(limits, fmt.Sprintf("max messages %d (--max-msgs=-1)", c.MaxMsgs))
	}
	if c.MaxMsgsPerSubject > 0 {
		limits = append(limits, fmt.Sprintf("max messages per subject %d (--max-msgs-per-subject=-1)", c.MaxMsgsPerSubject))
	}
	if c.Discard == jetstream.DiscardNew {
		limits = append(limits, "discard new (--discard=old)")
	}
	if len(limits) == 0 {
		return nil
	}
	return fmt.Errorf("%w: stream %s has %s; read models are rebuilt from the whole history, so the stream must keep "+
		"every event. Fix: nats stream edit %s with the flags shown (events already removed are lost from the stream; "+
		"the outbox may still hold them)", ErrStreamLimits, c.Name, strings.Join(limits, ", "), c.Name)
}

// DeadLetterConfig configures the dead-letter stream projections publish
// poison events to. Zero fields take defaults.
type DeadLetterConfig struct {
	Name            string        // default "DLQ"
	Subjects        []string      // default ["dlq.>"]
	MaxAge          time.Duration // default 90 days, time to inspect and replay
	MaxBytes        int64         // 0 means unlimited
	Replicas        int           // default 1, at creation only (see StreamConfig.Replicas)
	DuplicateWindow time.Duration // default 2m
}

func (c DeadLetterConfig) withDefaults() DeadLetterConfig {
	if c.Name == "" {
		c.Name = DefaultDeadLetterStreamName
	}
	if len(c.Subjects) == 0 {
		c.Subjects = []string{"dlq.>"}
	}
	if c.MaxAge == 0 {
		c.MaxAge = DefaultDeadLetterMaxAge
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	return c
}

// Validate reports the first invalid field, after defaults are applied.
func (c DeadLetterConfig) Validate() error {
	c = c.withDefaults()
	return validateStreamLimits("DeadLetterConfig", c.Name, c.Subjects, c.DuplicateWindow, c.Replicas, c.MaxAge, c.MaxBytes)
}

// EnsureDeadLetterStream creates the dead-letter stream (file storage,
// limits retention, cfg.Replicas) if it does not exist, and otherwise brings
// its mutable settings but the replicas in line with cfg. Idempotent.
func EnsureDeadLetterStream(ctx context.Context, js jetstream.JetStream, cfg DeadLetterConfig) (jetstream.Stream, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return ensureStream(ctx, js, jetstream.StreamConfig{
		Name:        cfg.Name,
		Description: "jetcqrs dead-lettered events, with the reason they could not be projected",
		Subjects:    cfg.Subjects,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Duplicates:  cfg.DuplicateWindow,
		MaxAge:      cfg.MaxAge,
		MaxBytes:    unlimitedIfZero(cfg.MaxBytes),
		MaxMsgs:     -1,
	}, func(*jetstream.StreamInfo) error { return nil })
}

func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig,
	check func(*jetstream.StreamInfo) error,
) (jetstream.Stream, error) {
	// A concurrent creator can win between our lookup and our create; the
	// second pass then finds its stream.
	for range 3 {
		s, err := js.Stream(ctx, want.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			s, err = js.CreateStream(ctx, want)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("nats: create stream %s at %d replicas: %w", want.Name, want.Replicas, replicasErr(err))
			}
			return s, nil
		}
		if err != nil {
			return nil, fmt.Errorf("nats: look up stream %s: %w", want.Name, err)
		}
		info := s.CachedInfo()
		if err := check(info); err != nil {
			return nil, err
		}
		if info.Config.Storage != want.Storage || info.Config.Retention != want.Retention {
			return nil, fmt.Errorf("nats: stream %s exists with %s storage and %s retention, want %s and %s; "+
				"these cannot be changed in place, re-create the stream",
				want.Name, info.Config.Storage, info.Config.Retention, want.Storage, want.Retention)
		}
		upd, changed := mergeMutable(info.Config, want)
		if !changed {
			return s, nil
		}
		s, err = js.UpdateStream(ctx, upd)
		if err != nil {
			return nil, fmt.Errorf("nats: update stream %s: %w", want.Name, err)
		}
		return s, nil
	}
	return nil, fmt.Errorf("nats: stream %s: created and deleted concurrently, giving up", want.Name)
}

// mergeMutable returns have with the settings EnsureStream manages taken
// from want, leaving anything an operator set by hand (placement, sources,
// compression, ...) alone. Replicas are not among them: a failed raise must
// not stop a process start (RaiseReplicas), and lowering them is the
// operator's call.
func mergeMutable(have, want jetstream.StreamConfig) (jetstream.StreamConfig, bool) {
	upd := have
	changed := false
	if !slices.Equal(slices.Sorted(slices.Values(have.Subjects)), slices.Sorted(slices.Values(want.Subjects))) {
		upd.Subjects, changed = want.Subjects, true
	}
	if have.Duplicates != want.Duplicates {
		upd.Duplicates, changed = want.Duplicates, true
	}
	if have.MaxAge != want.MaxAge {
		upd.MaxAge, changed = want.MaxAge, true
	}
	if have.MaxBytes != want.MaxBytes {
		upd.MaxBytes, changed = want.MaxBytes, true
	}
	for k, v := range want.Metadata {
		if have.Metadata[k] != v {
			upd.Metadata = maps.Clone(have.Metadata)
			if upd.Metadata == nil {
				upd.Metadata = make(map[string]string, len(want.Metadata))
			}
			maps.Copy(upd.Metadata, want.Metadata)
			changed = true
			break
		}
	}
	return upd, changed
}

func validateStreamLimits(typ, name string, subjects []string, dupWindow time.Duration, replicas int,
	maxAge time.Duration, maxBytes int64,
) error {
	if name == "" || strings.ContainsAny(name, ".*> \t\r\n/\\") {
		return fmt.Errorf("nats: %s.Name %q is not a valid stream name (no '.', '*', '>', whitespace or path separators)", typ, name)
	}
	for _, s := range subjects {
		if !validSubjectPattern(s) {
			return fmt.Errorf("nats: %s.Subjects: %q is not a valid subject", typ, s)
		}
	}
	switch {
	case dupWindow < 0:
		return fmt.Errorf("nats: %s.DuplicateWindow %s is negative", typ, dupWindow)
	case maxAge < 0:
		return fmt.Errorf("nats: %s.MaxAge %s is negative", typ, maxAge)
	case maxAge > 0 && dupWindow > maxAge:
		return fmt.Errorf("nats: %s.DuplicateWindow %s exceeds MaxAge %s", typ, dupWindow, maxAge)
	case replicas < 1 || replicas > 5:
		return fmt.Errorf("nats: %s.Replicas %d out of range 1-5", typ, replicas)
	case maxBytes < 0:
		return fmt.Errorf("nats: %s.MaxBytes %d is negative (0 means unlimited)", typ, maxBytes)
	}
	return nil
}

// validSubjectPattern checks a stream subject: dot-separated non-empty
// tokens without whitespace, '>' only as the whole last token, '*' only as
// a whole token.
func validSubjectPattern(s string) bool {
	if s == "" {
		return false
	}
	tokens := strings.Split(s, ".")
	for i, t := range tokens {
		switch {
		case t == "":
			return false
		case t == ">":
			if i != len(tokens)-1 {
				return false
			}
		case t == "*":
		case strings.ContainsAny(t, "*> \t\r\n"):
			return false
		}
	}
	return true
}

func unlimitedIfZero(n int64) int64 {
	if n == 0 {
		return -1
	}
	return n
}
