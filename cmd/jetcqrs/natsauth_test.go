package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	jnats "github.com/jetcqrs/jetcqrs/nats"
)

// configFromEnv is the Config a subcommand sees with env set and no flags.
func configFromEnv(t *testing.T, env map[string]string) *Config {
	t.Helper()
	for _, name := range envNames {
		t.Setenv(name, "")
		os.Unsetenv(name)
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	cfg := &Config{}
	cmd := newRootCmd()
	cfg.bind(cmd.Flags())
	if err := cmd.Flags().Parse(nil); err != nil {
		t.Fatal(err)
	}
	if err := applyEnv(cmd.Flags()); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestProcessesReachTheBrokerWithItsCredentials: `jetcqrs broker` generates
// DATA_DIR/nats-password (mode 0600); a process started apart with NATS_URL
// and the same DATA_DIR finds it, one elsewhere needs NATS_USER and
// NATS_PASSWORD (the nats CLI's variables), and one without them is refused.
func TestProcessesReachTheBrokerWithItsCredentials(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	brokerDir := t.TempDir()
	brokerCfg := configFromEnv(t, map[string]string{"DATA_DIR": brokerDir, "NATS_PORT": "-1", "HTTP_ADDR": "127.0.0.1:0"})
	broker, err := NewMain(ctx, brokerCfg, Components{Broker: true}, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()

	pwFile := filepath.Join(brokerDir, "nats-password")
	st, err := os.Stat(pwFile)
	if err != nil {
		t.Fatalf("the broker made no password file: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s mode = %o, want 600", pwFile, st.Mode().Perm())
	}
	password, err := jnats.ReadPassword(pwFile)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(broker.natsServer.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	u.User = nil
	bare := u.String()

	connect := func(env map[string]string) (*natsgo.Conn, error) {
		t.Helper()
		env["NATS_URL"] = bare
		cfg := configFromEnv(t, env)
		if err := cfg.Validate(); err != nil {
			t.Fatalf("config %v: %v", env, err)
		}
		return (&Main{cfg: cfg, logger: logger}).connectNATS(ctx, bare, t.Name())
	}
	admitted := map[string]map[string]string{
		"same DATA_DIR":               {"DATA_DIR": brokerDir},
		"NATS_USER and NATS_PASSWORD": {"DATA_DIR": t.TempDir(), "NATS_USER": jnats.EmbeddedUser, "NATS_PASSWORD": password},
	}
	for name, env := range admitted {
		nc, err := connect(env)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Stream(ctx, jnats.DefaultStreamName); err != nil {
			t.Errorf("%s: inspect %s: %v", name, jnats.DefaultStreamName, err)
		}
		nc.Close()
	}
	refused := map[string]map[string]string{
		"another DATA_DIR":    {"DATA_DIR": t.TempDir()},
		"wrong NATS_TOKEN":    {"DATA_DIR": brokerDir, "NATS_TOKEN": password},
		"wrong NATS_PASSWORD": {"DATA_DIR": brokerDir, "NATS_USER": jnats.EmbeddedUser, "NATS_PASSWORD": strings.Repeat("x", 64)},
	}
	for name, env := range refused {
		nc, err := connect(env)
		if err == nil {
			nc.Close()
			t.Fatalf("%s: connected to the broker", name)
		}
		if !errors.Is(err, natsgo.ErrAuthorization) {
			t.Errorf("%s: %v, want %v", name, err, natsgo.ErrAuthorization)
		}
	}
}

func TestNATSCredentialsConfigErrors(t *testing.T) {
	cases := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"NATS_USER": "u", "NATS_TOKEN": "t"}, "NATS_USER, NATS_TOKEN"},
		{map[string]string{"NATS_CREDS": "u.creds", "NATS_NKEY": "u.nk"}, "NATS_CREDS, NATS_NKEY"},
		{map[string]string{"NATS_PASSWORD": "p"}, "NATS_PASSWORD needs NATS_USER"},
		{map[string]string{"NATS_CERT": "c.pem"}, "NATS_CERT and NATS_KEY"},
	}
	for _, c := range cases {
		t.Run(c.want, func(t *testing.T) {
			_, err := run(t, c.env, "version")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to name %q", err, c.want)
			}
		})
	}
}
