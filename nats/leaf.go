package nats

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// LeafRemote is the hub an embedded server joins as a leaf node.
type LeafRemote struct {
	// URLs of the hub's leaf node listeners (nats-leaf://, nats://, tls:// or
	// wss://), tried in turn; user and password may ride in a URL's user
	// information.
	URLs []string
	// Credentials is a NATS .creds file for the hub, if it authenticates
	// leaf nodes with JWTs.
	Credentials string
}

func (r LeafRemote) options() (*natsserver.RemoteLeafOpts, error) {
	if len(r.URLs) == 0 {
		return nil, errors.New("nats: LeafRemote.URLs is empty")
	}
	out := &natsserver.RemoteLeafOpts{Credentials: r.Credentials}
	for _, raw := range r.URLs {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || u.Host == "" {
			// The URL may carry a password: never echo it.
			return nil, errors.New("nats: a hub URL is not a URL with a host")
		}
		out.URLs = append(out.URLs, u)
	}
	return out, nil
}

// LeafLinked reports whether the server's leaf connection to its hub is up.
func (s *Server) LeafLinked() bool { return s.ns.NumLeafNodes() > 0 }

// EnsureMirror creates the stream name as a mirror of the stream of the same
// name in JetStream domain hubDomain, reached across a leaf connection, or
// checks that the existing stream is that mirror. A mirror stores each
// message at its sequence number in the hub, so checkpoints and consistency
// tokens mean the same at both; it takes no publishes. The hub need not be
// reachable: the mirror starts when it is.
func EnsureMirror(ctx context.Context, js jetstream.JetStream, name, hubDomain string) (jetstream.Stream, error) {
	if name == "" {
		name = DefaultStreamName
	}
	cfg := jetstream.StreamConfig{
		Name:        name,
		Description: "jetcqrs domain events: a mirror of " + name + " in JetStream domain " + hubDomain,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Storage:     jetstream.FileStorage,
		Replicas:    1,
		MaxBytes:    -1,
		MaxMsgs:     -1,
		Mirror:      &jetstream.StreamSource{Name: name, Domain: hubDomain},
	}
	s, err := js.CreateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		if s, err = js.Stream(ctx, name); err != nil {
			return nil, fmt.Errorf("nats: stream %s: %w", name, err)
		}
		mirror := s.CachedInfo().Config.Mirror
		prefix := "$JS." + hubDomain + ".API"
		if mirror == nil || mirror.Name != name || mirror.External == nil || mirror.External.APIPrefix != prefix {
			return nil, fmt.Errorf("nats: stream %s exists and is not a mirror of %s in domain %s; "+
				"an edge needs a data directory of its own (or delete the stream: nats stream rm %s)", name, name, hubDomain, name)
		}
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("nats: create the mirror %s of domain %s: %w", name, hubDomain, err)
	}
	return s, nil
}

// MirrorState is what a mirror knows of its source.
type MirrorState struct {
	// Active is how long ago the mirror last heard from its source (a
	// message or the source's heartbeat, every second); negative when it
	// has not heard from it since the server started.
	Active time.Duration
	// Lag is how many messages the mirror was behind when it last heard.
	Lag uint64
	// LastSeq is the mirror's last sequence.
	LastSeq uint64
}

// Mirror reports the state of the mirror stream name.
func Mirror(ctx context.Context, js jetstream.JetStream, name string) (MirrorState, error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return MirrorState{}, err
	}
	info := s.CachedInfo()
	if info.Mirror == nil {
		return MirrorState{}, fmt.Errorf("nats: stream %s is not a mirror", name)
	}
	return MirrorState{Active: info.Mirror.Active, Lag: info.Mirror.Lag, LastSeq: info.State.LastSeq}, nil
}
