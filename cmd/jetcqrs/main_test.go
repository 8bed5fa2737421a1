package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/jetcqrs/jetcqrs/auth"
	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/testenv"
)

// run executes the CLI with args and an isolated environment.
func run(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	for _, name := range envNames {
		t.Setenv(name, "")
		os.Unsetenv(name)
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(io.Discard)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestConfigErrorsNameTheField(t *testing.T) {
	cases := []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{"DATABASE_URL": "mysql://x"}, nil, "database-url ($DATABASE_URL)"},
		{map[string]string{"REDIS_URL": "http://x"}, nil, "redis-url ($REDIS_URL)"},
		{map[string]string{"NATS_URL": "http://x"}, nil, "nats-url ($NATS_URL)"},
		{map[string]string{"NATS_URL": "nats://a:4222,http://b:4222"}, nil, "nats-url ($NATS_URL)"},
		{map[string]string{"NATS_REPLICAS": "7"}, nil, "nats-replicas ($NATS_REPLICAS)"},
		{map[string]string{"NATS_REPLICAS": "3"}, nil, "nats-replicas ($NATS_REPLICAS) 3 needs a NATS cluster"},
		{map[string]string{"JWT_SECRET": "short"}, nil, "jwt-secret ($JWT_SECRET)"},
		{map[string]string{"HTTP_ADDR": "8080"}, nil, "http-addr ($HTTP_ADDR)"},
		{map[string]string{"DB_MAX_CONNS": "lots"}, nil, "db-max-conns (from $DB_MAX_CONNS)"},
		{map[string]string{"DB_MAX_CONNS": "0"}, nil, "db-max-conns ($DB_MAX_CONNS)"},
		{map[string]string{"COMMAND_TIMEOUT": "-1s"}, nil, "command-timeout ($COMMAND_TIMEOUT)"},
		{map[string]string{"LOG_LEVEL": "loud"}, nil, "log-level ($LOG_LEVEL)"},
		{nil, []string{"--log-format", "xml"}, "log-format ($LOG_FORMAT)"},
	}
	for _, c := range cases {
		t.Run(c.want, func(t *testing.T) {
			args := append([]string{"version"}, c.args...)
			_, err := run(t, c.env, args...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to name %q", err, c.want)
			}
		})
	}
}

func TestFlagsWinOverEnvironment(t *testing.T) {
	cfg := &Config{}
	cmd := newRootCmd()
	cfg.bind(cmd.Flags())
	t.Setenv("HTTP_ADDR", "127.0.0.1:1")
	if err := cmd.Flags().Parse([]string{"--http-addr", "127.0.0.1:2"}); err != nil {
		t.Fatal(err)
	}
	if err := applyEnv(cmd.Flags()); err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPAddr != "127.0.0.1:2" {
		t.Fatalf("http addr = %q, want the flag's value", cfg.HTTPAddr)
	}
}

// TestEveryFlagReadsItsEnvironmentVariable: each configuration flag has an
// environment variable, and setting it changes the flag.
func TestEveryFlagReadsItsEnvironmentVariable(t *testing.T) {
	fs := pflag.NewFlagSet("config", pflag.ContinueOnError)
	(&Config{}).bind(fs)
	want := map[string]string{}
	fs.VisitAll(func(f *pflag.Flag) {
		env, ok := envNames[f.Name]
		if !ok {
			t.Errorf("flag --%s has no environment variable", f.Name)
			return
		}
		var v string
		switch typ := f.Value.Type(); typ {
		case "string":
			v = "from-" + env
		case "int", "int32":
			v = "7"
		case "duration":
			v = "7s"
		default:
			t.Fatalf("flag --%s: no test value for type %s", f.Name, typ)
		}
		t.Setenv(env, v)
		want[f.Name] = v
	})
	for name := range envNames {
		if fs.Lookup(name) == nil {
			t.Errorf("environment variable %s names no flag --%s", envNames[name], name)
		}
	}
	if err := applyEnv(fs); err != nil {
		t.Fatal(err)
	}
	for name, v := range want {
		if got := fs.Lookup(name).Value.String(); got != v {
			t.Errorf("--%s = %q after $%s=%q", name, got, envNames[name], v)
		}
	}
}

func TestTokenUsesGeneratedSecretAndVerifies(t *testing.T) {
	dir := t.TempDir()
	out, err := run(t, map[string]string{"DATA_DIR": dir}, "token", "--sub", "u1", "--role", "admin")
	if err != nil {
		t.Fatal(err)
	}
	secret, err := os.ReadFile(filepath.Join(dir, "jwt-secret"))
	if err != nil {
		t.Fatalf("secret file: %v", err)
	}
	if st, _ := os.Stat(filepath.Join(dir, "jwt-secret")); st.Mode().Perm() != 0o600 {
		t.Fatalf("secret file mode %v, want 0600", st.Mode().Perm())
	}
	tokens, err := auth.New(bytes.TrimSpace(secret))
	if err != nil {
		t.Fatal(err)
	}
	actor, err := tokens.Verify(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("verify printed token: %v", err)
	}
	if actor != (domain.Actor{Subject: "u1", Role: domain.RoleAdmin}) {
		t.Fatalf("actor = %+v", actor)
	}
	// A second call reuses the same secret.
	out2, err := run(t, map[string]string{"DATA_DIR": dir}, "token", "--sub", "u2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tokens.Verify(strings.TrimSpace(out2)); err != nil {
		t.Fatalf("second token does not verify with the same secret: %v", err)
	}
	if _, err := run(t, map[string]string{"DATA_DIR": dir}, "token", "--sub", "u1", "--role", "root"); err == nil {
		t.Fatal("role root was accepted")
	}
}

// TestServeAnswersAndShutsDownGracefully runs the wired process against the
// real PostgreSQL, checks health and readiness, then cancels it as SIGTERM
// would and expects a clean return.
func TestServeAnswersAndShutsDownGracefully(t *testing.T) {
	cfg := &Config{}
	cmd := newRootCmd()
	cfg.bind(cmd.Flags())
	_ = cmd.Flags().Parse(nil)
	cfg.DatabaseURL = testenv.PostgresURL(t)
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.NATSPort = -1
	redisURL, prefix := testenv.RedisURL(t)
	cfg.RedisURL, cfg.RedisPrefix = redisURL, prefix
	chAddr, chDB := testenv.ClickHouseAddr(t)
	cfg.ClickHouseURL = "clickhouse://" + chAddr + "/" + chDB
	cfg.SlotName = "jetcqrs_test_serve"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m, err := NewMain(ctx, cfg, All, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	base := "http://" + m.Addr()
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s = %d", path, resp.StatusCode)
		}
	}
	// The same search twice with no index batch between: the second is
	// answered from the search cache, and /metrics counts it.
	for range 2 {
		resp, err := http.Get(base + "/v1/products?q=mug")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("search = %d", resp.StatusCode)
		}
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"jetcqrs_catalog_search_cache_hits_total 1", "jetcqrs_catalog_search_cache_misses_total 1"} {
		if !strings.Contains(string(metrics), want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	resp, err = http.Post(base+"/v1/orders", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("unauthenticated command = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	cancel()
	awaitReturns(t, done, 1)
}

// awaitReturns waits for n Run calls to return nil on done after their
// context was cancelled.
func awaitReturns(t *testing.T, done <-chan error, n int) {
	t.Helper()
	for range n {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Run returned %v after shutdown", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
	}
}

// TestBrokerServesProcessesStartedApart runs `broker` and a relay in another
// Main that reaches it through NATS_URL, as two processes would: the relay
// provisions the streams on the broker's server and both are ready.
func TestBrokerServesProcessesStartedApart(t *testing.T) {
	base := func() *Config {
		cfg := &Config{}
		cmd := newRootCmd()
		cfg.bind(cmd.Flags())
		_ = cmd.Flags().Parse(nil)
		cfg.HTTPAddr = "127.0.0.1:0"
		cfg.DataDir = t.TempDir()
		cfg.NATSPort = -1
		return cfg
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	withURL := base()
	withURL.NATSURL = "nats://127.0.0.1:4222"
	if _, err := NewMain(ctx, withURL, Components{Broker: true}, logger); err == nil || !strings.Contains(err.Error(), "unset NATS_URL") {
		t.Fatalf("broker with NATS_URL set: %v, want a refusal", err)
	}

	brokerCfg := base()
	broker, err := NewMain(ctx, brokerCfg, Components{Broker: true}, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	relayCfg := base()
	relayCfg.NATSURL = broker.natsServer.ClientURL()
	relayCfg.DatabaseURL = testenv.PostgresURL(t)
	relayCfg.SlotName = "jetcqrs_test_broker"
	relayProc, err := NewMain(ctx, relayCfg, Components{Relay: true}, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer relayProc.Close()
	if relayProc.natsServer != nil {
		t.Fatal("the relay started a NATS server of its own")
	}
	done := make(chan error, 2)
	for _, m := range []*Main{broker, relayProc} {
		go func() { done <- m.Run(ctx) }()
	}
	for _, m := range []*Main{broker, relayProc} {
		resp, err := http.Get("http://" + m.Addr() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/readyz of %+v = %d", m.comp, resp.StatusCode)
		}
	}
	if _, err := broker.js.Stream(ctx, "EVENTS"); err != nil {
		t.Fatalf("EVENTS on the broker's server: %v", err)
	}
	readyz := func() (int, map[string]string) {
		resp, err := http.Get("http://" + relayProc.Addr() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct{ Checks map[string]string }
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body.Checks
	}
	if code, checks := readyz(); code != http.StatusOK || checks["postgres"] != "ok" || checks["nats"] != "ok" {
		t.Fatalf("relay /readyz = %d %v, want PostgreSQL and NATS ok", code, checks)
	}
	// The broker goes away: the relay is alive but not ready.
	broker.natsServer.Shutdown()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, checks := readyz()
		if code == http.StatusServiceUnavailable && checks["nats"] != "ok" && checks["postgres"] == "ok" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay /readyz with the broker gone = %d %v, want 503 naming NATS", code, checks)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	awaitReturns(t, done, 2)
}
