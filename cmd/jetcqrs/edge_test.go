package main

import (
	"strings"
	"testing"
)

// TestEdgeConfig names the bad field of an edge or hub configuration.
func TestEdgeConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*Config)
		want string // "" = valid
	}{
		{"edge", func(c *Config) {
			c.NATSHubURL, c.NATSDomain, c.HubAPIURL = "nats-leaf://u:p@hub:7422", "edge-1", "http://hub:8080"
		}, ""},
		{"hub", func(c *Config) { c.NATSDomain, c.NATSLeafAddr = "hub", "0.0.0.0:7422" }, ""},
		{"edge without a domain", func(c *Config) { c.NATSHubURL = "nats-leaf://hub:7422" }, "nats-domain"},
		{"edge in the hub's domain", func(c *Config) { c.NATSHubURL, c.NATSDomain = "nats-leaf://hub:7422", "hub" }, "nats-domain"},
		{"edge with nats-url", func(c *Config) {
			c.NATSHubURL, c.NATSDomain, c.NATSURL = "nats-leaf://hub:7422", "e", "nats://x:4222"
		}, "unset nats-url"},
		{"bad hub scheme", func(c *Config) { c.NATSHubURL, c.NATSDomain = "http://hub:7422", "e" }, "nats-hub-url"},
		{"bad hub API", func(c *Config) {
			c.NATSHubURL, c.NATSDomain, c.HubAPIURL = "nats-leaf://hub:7422", "e", "hub:8080"
		}, "hub-api-url"},
		{"hub API without edge", func(c *Config) { c.HubAPIURL = "http://hub:8080" }, "hub-api-url"},
		{"bad leaf addr", func(c *Config) { c.NATSLeafAddr = "7422" }, "nats-leaf-addr"},
	} {
		cfg := testConfigNoServices(t)
		tc.set(cfg)
		err := cfg.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error naming %s", tc.name, err, tc.want)
		}
	}
}

func testConfigNoServices(t *testing.T) *Config {
	t.Helper()
	cfg := &Config{}
	cmd := newRootCmd()
	cfg.bind(cmd.Flags())
	if err := cmd.Flags().Parse(nil); err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = t.TempDir()
	return cfg
}
