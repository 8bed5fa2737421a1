package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"

	"github.com/spf13/pflag"
)

func (c *Config) bindEdge(fs *pflag.FlagSet) {
	fs.StringVar(&c.NATSHubURL, "nats-hub-url", "", "edge mode: the hub's leaf node URL(s) (nats-leaf://user:password@hub:7422, comma-separated) "+
		"the embedded NATS server joins as a leaf node, mirroring EVENTS from the hub (query-api only)")
	fs.StringVar(&c.NATSHubCreds, "nats-hub-creds", "", "edge mode: a .creds file for the leaf connection to the hub")
	fs.StringVar(&c.NATSDomain, "nats-domain", "", "JetStream domain of the embedded server: the hub's (hub) with nats-leaf-addr, "+
		"an edge's own (e.g. edge-paris) with nats-hub-url")
	fs.StringVar(&c.NATSLeafAddr, "nats-leaf-addr", "", "hub: host:port where the embedded NATS server accepts edges' leaf connections "+
		"(e.g. 0.0.0.0:7422; they authenticate as clients do)")
	fs.StringVar(&c.NATSHubDomain, "nats-hub-domain", "hub", "edge mode: JetStream domain of the hub, whose EVENTS the edge mirrors")
	fs.StringVar(&c.HubAPIURL, "hub-api-url", "", "edge mode: the hub's command API (http(s)://…); commands sent to the edge are forwarded there, "+
		"or refused with 503 hub_unreachable while it cannot be reached; empty refuses them")
}

var domainName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// isEdge reports whether the process is an edge node.
func (c *Config) isEdge() bool { return c.NATSHubURL != "" }

func (c *Config) validateEdge() error {
	if c.NATSLeafAddr != "" {
		if c.NATSURL != "" || c.isEdge() {
			return errors.New("config: nats-leaf-addr ($NATS_LEAF_ADDR) makes the embedded server a hub: unset nats-url and nats-hub-url")
		}
		if _, _, err := net.SplitHostPort(c.NATSLeafAddr); err != nil {
			return fmt.Errorf("config: nats-leaf-addr ($NATS_LEAF_ADDR) must be host:port, got %q", c.NATSLeafAddr)
		}
	}
	if !c.isEdge() {
		if c.HubAPIURL != "" || c.NATSHubCreds != "" {
			return errors.New("config: nats-hub-creds and hub-api-url are for edge mode: set nats-hub-url ($NATS_HUB_URL) too")
		}
		if c.NATSDomain != "" && (c.NATSURL != "" || !domainName.MatchString(c.NATSDomain)) {
			return fmt.Errorf("config: nats-domain ($NATS_DOMAIN) names the embedded server's JetStream domain "+
				"(letters, digits, - and _; not with nats-url), got %q", c.NATSDomain)
		}
		return nil
	}
	if c.NATSURL != "" {
		return errors.New("config: nats-hub-url ($NATS_HUB_URL) joins the embedded server to the hub: unset nats-url ($NATS_URL)")
	}
	for _, raw := range strings.Split(c.NATSHubURL, ",") {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || u.Host == "" {
			return errors.New("config: nats-hub-url ($NATS_HUB_URL) must be nats-leaf://host:port URLs, comma-separated")
		}
		switch u.Scheme {
		case "nats-leaf", "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("config: nats-hub-url ($NATS_HUB_URL) must be nats-leaf://, nats://, tls://, ws:// or wss:// URLs; one starts %q", u.Scheme)
		}
	}
	if !domainName.MatchString(c.NATSDomain) || !domainName.MatchString(c.NATSHubDomain) || c.NATSDomain == c.NATSHubDomain {
		return fmt.Errorf("config: edge mode needs nats-domain ($NATS_DOMAIN) and nats-hub-domain ($NATS_HUB_DOMAIN), "+
			"distinct names of letters, digits, - and _; got %q and %q", c.NATSDomain, c.NATSHubDomain)
	}
	if c.HubAPIURL != "" {
		if u, err := url.Parse(c.HubAPIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("config: hub-api-url ($HUB_API_URL) must be an http(s) URL, got %q", c.HubAPIURL)
		}
	}
	return nil
}
