package nats

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// bareURL is srv's URL without the credentials it carries.
func bareURL(srv *Server) string { return srv.ns.ClientURL() }

// TestEmbeddedServerRefusesClientsWithoutCredentials: a local process that
// lacks the generated password can neither publish a forged event to
// events.> nor rewrite the read-model generations bucket, because the
// server refuses it at CONNECT; the stream and the bucket stay untouched.
func TestEmbeddedServerRefusesClientsWithoutCredentials(t *testing.T) {
	t.Parallel()
	logger := testLogger(t)
	srv, _, js := setup(t)
	// The read models' generation record lives in a key-value bucket of
	// the same server (projections/lifecycle keeps it in jetcqrs_read_models).
	gens, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "jetcqrs_read_models"})
	if err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	if _, err := gens.Put(t.Context(), "orders", []byte(`{"live":1}`)); err != nil {
		t.Fatalf("put: %v", err)
	}

	intruders := map[string][]natsgo.Option{
		"no credentials": nil,
		"wrong password": {natsgo.UserInfo(EmbeddedUser, strings.Repeat("0", minPasswordLen))},
		"other user":     {natsgo.UserInfo("admin", srv.password)},
		"token":          {natsgo.Token(srv.password)},
	}
	for name, opts := range intruders {
		nc, err := natsgo.Connect(bareURL(srv), append(opts, natsgo.Timeout(2*time.Second))...)
		if err == nil {
			// The server let it in: show what it could do, then fail.
			pubErr := nc.Publish("events.order.0", []byte(`{"forged":true}`))
			nc.Close()
			t.Fatalf("%s: connected without the generated password (publish to events.order.0: %v)", name, pubErr)
		}
		if !errors.Is(err, natsgo.ErrAuthorization) {
			t.Errorf("%s: Connect error = %v, want %v", name, err, natsgo.ErrAuthorization)
		}
	}

	// Connect gives up at once on an authorization error instead of
	// retrying until its context ends.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := Connect(ctx, bareURL(srv), t.Name(), logger); !errors.Is(err, natsgo.ErrAuthorization) {
		t.Errorf("Connect without credentials = %v, want %v", err, natsgo.ErrAuthorization)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Connect without credentials took %s, want it to fail at once", d)
	}

	info, err := js.Stream(t.Context(), DefaultStreamName)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	if st := info.CachedInfo().State; st.Msgs != 0 {
		t.Errorf("EVENTS holds %d messages after the intruders, want 0", st.Msgs)
	}
	if e, err := gens.Get(t.Context(), "orders"); err != nil || string(e.Value()) != `{"live":1}` || e.Revision() != 1 {
		t.Errorf("orders record after the intruders = %v, want {\"live\":1} at revision 1", describeEntry(e, err))
	}
}

// TestEmbeddedServerCredentials: the password is generated once into the
// password file (mode 0600), kept across restarts, and admits a client
// given it apart from the URL, as an external-server client or the nats CLI
// (--user jetcqrs --password ...) would, which can then inspect the stream.
func TestEmbeddedServerCredentials(t *testing.T) {
	t.Parallel()
	logger := testLogger(t)
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "secrets", "nats-password")
	start := func() *Server {
		srv, err := StartEmbedded(ServerConfig{Port: RandomPort, StoreDir: filepath.Join(dir, "nats"), PasswordFile: pwFile}, logger)
		if err != nil {
			t.Fatalf("StartEmbedded: %v", err)
		}
		t.Cleanup(srv.Shutdown)
		return srv
	}
	first := start()
	st, err := os.Stat(pwFile)
	if err != nil {
		t.Fatalf("password file: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("password file mode = %o, want 600", st.Mode().Perm())
	}
	pw, err := ReadPassword(pwFile)
	if err != nil {
		t.Fatalf("ReadPassword: %v", err)
	}
	if creds := first.Credentials(); creds.User != EmbeddedUser || creds.Password != pw || len(pw) != minPasswordLen {
		t.Fatalf("Credentials() = %s/%d characters, want %s and the %d characters of the file",
			creds.User, len(creds.Password), EmbeddedUser, minPasswordLen)
	}
	_, js := connect(t, first.ClientURL(), logger)
	if _, err := EnsureStream(t.Context(), js, StreamConfig{}); err != nil {
		t.Fatalf("EnsureStream: %v", err)
	}
	first.Shutdown()

	second := start()
	if second.Credentials() != first.Credentials() {
		t.Fatal("the password changed across a restart on the same password file")
	}
	opts, err := Credentials{User: EmbeddedUser, Password: pw}.Options()
	if err != nil {
		t.Fatalf("Options: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	nc, err := Connect(ctx, bareURL(second), t.Name(), logger, opts...)
	if err != nil {
		t.Fatalf("Connect with the password file's credentials: %v", err)
	}
	t.Cleanup(nc.Close)
	js2, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js2.Stream(ctx, DefaultStreamName)
	if err != nil {
		t.Fatalf("inspect %s with the generated credentials: %v", DefaultStreamName, err)
	}
	if got := stream.CachedInfo().Config.Subjects; len(got) == 0 {
		t.Errorf("stream subjects = %v, want the events subjects", got)
	}
}

func TestReadPasswordRejectsShortFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "password")
	if _, err := ReadPassword(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ReadPassword(missing) = %v, want os.ErrNotExist", err)
	}
	if err := os.WriteFile(path, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPassword(path); err == nil || !strings.Contains(err.Error(), "shorter") {
		t.Fatalf("ReadPassword(short) = %v, want an error saying it is too short", err)
	}
	if _, err := StartEmbedded(ServerConfig{Port: RandomPort, StoreDir: t.TempDir(), PasswordFile: path}, testLogger(t)); err == nil {
		t.Fatal("StartEmbedded accepted a short password file")
	}
}

func TestCredentialsValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		c       Credentials
		wantErr string
	}{
		{"none", Credentials{}, ""},
		{"user", Credentials{User: "u", Password: "p"}, ""},
		{"token and tls", Credentials{Token: "t", CAFile: "ca.pem", CertFile: "c.pem", KeyFile: "k.pem"}, ""},
		{"two ways", Credentials{User: "u", Token: "t"}, "NATS_USER, NATS_TOKEN"},
		{"password alone", Credentials{Password: "p"}, "NATS_PASSWORD needs NATS_USER"},
		{"cert without key", Credentials{CertFile: "c.pem"}, "NATS_CERT and NATS_KEY"},
		{"key without cert", Credentials{KeyFile: "k.pem"}, "NATS_CERT and NATS_KEY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want an error naming %s", err, tt.wantErr)
			}
		})
	}
}

func describeEntry(e jetstream.KeyValueEntry, err error) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%s at revision %d", e.Value(), e.Revision())
}
