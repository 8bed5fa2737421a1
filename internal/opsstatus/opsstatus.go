// Package opsstatus is the operator's one-screen view of a running
// deployment (`jetcqrs status`, `jetcqrs rebuild`): it reads the admin API
// (GET /v1/admin/projections, GET /v1/admin/relay) and /metrics of the
// processes it is pointed at, renders relay, slot, streams, every read model
// and any rebuild with a progress bar, and evaluates the alert conditions of
// deploy/prometheus/alerts.yml on what it read.
package opsstatus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/jetcqrs/jetcqrs/projections/lifecycle"
	"github.com/jetcqrs/jetcqrs/relay"
)

// Thresholds of the alert conditions, as deploy/prometheus/alerts.yml sets
// them.
const (
	SlotLagAlertBytes   = 16 << 20
	SlotStuckAfter      = time.Minute
	ProjectionLagBound  = 500 * time.Millisecond
	RebuildSampleWindow = 2 * time.Second
)

// Client reads a deployment's admin API and metrics.
type Client struct {
	// Server is the base URL of a process serving GET /v1/admin/projections
	// (the projector's, or serve's).
	Server string
	// Relays are base URLs of processes running the relay; empty: Server.
	Relays []string
	// Metrics is the URL of Server's /metrics; empty: Server + "/metrics".
	Metrics string
	// Token is an admin bearer token.
	Token string
	HTTP  *http.Client
}

// Stream is a JetStream stream's size, from /metrics.
type Stream struct {
	Name     string `json:"name"`
	Messages uint64 `json:"messages"`
	Bytes    uint64 `json:"bytes"`
	LastSeq  uint64 `json:"last_seq"`
}

// Relay is one relay process's state.
type Relay struct {
	Server string        `json:"server"`
	Status *relay.Status `json:"status,omitempty"`
	// ConfirmedLSNAgeSeconds is how long its confirmed position stood still
	// while WAL waited behind it (from its /metrics); nil when unknown.
	ConfirmedLSNAgeSeconds *float64 `json:"confirmed_lsn_age_seconds,omitempty"`
	Error                  string   `json:"error,omitempty"`
}

// Alert is an alert condition that holds.
type Alert struct {
	Name    string `json:"name"`
	Subject string `json:"subject,omitempty"`
	Message string `json:"message"`
}

// Report is what `jetcqrs status` shows.
type Report struct {
	Taken   time.Time          `json:"taken"`
	Server  string             `json:"server"`
	Relays  []Relay            `json:"relays"`
	Streams []Stream           `json:"streams"`
	Models  []lifecycle.Status `json:"models"`
	Alerts  []Alert            `json:"alerts"`
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return &http.Client{Timeout: 10 * time.Second}
}

// errNotServed is a 404: the process does not run that component.
var errNotServed = errors.New("not served by this process")

func (c *Client) getJSON(ctx context.Context, url string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := c.http().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return errNotServed
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return json.Unmarshal(body, out)
}

// Models reads GET /v1/admin/projections.
func (c *Client) Models(ctx context.Context) ([]lifecycle.Status, error) {
	var out []lifecycle.Status
	if err := c.getJSON(ctx, c.Server+"/v1/admin/projections", &out); err != nil {
		if errors.Is(err, errNotServed) {
			return nil, fmt.Errorf("%s runs no projector: point --server at one", c.Server)
		}
		return nil, err
	}
	return out, nil
}

func (c *Client) metrics(ctx context.Context, url string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %d", url, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

// gaugeValues returns the gauge family's values by the value of label.
func gaugeValues(fams map[string]*dto.MetricFamily, name, label string) map[string]float64 {
	out := map[string]float64{}
	f, ok := fams[name]
	if !ok {
		return out
	}
	for _, m := range f.GetMetric() {
		key := ""
		for _, l := range m.GetLabel() {
			if l.GetName() == label {
				key = l.GetValue()
			}
		}
		out[key] = m.GetGauge().GetValue()
	}
	return out
}

// Read takes the report: the models, the relays, the streams, then the
// alerts. While a rebuild runs it reads the models again after
// RebuildSampleWindow to tell a stalled rebuild from a moving one.
func (c *Client) Read(ctx context.Context) (*Report, error) {
	r := &Report{Taken: time.Now().UTC(), Server: c.Server}
	var err error
	if r.Models, err = c.Models(ctx); err != nil {
		return nil, err
	}
	metricsURL := c.Metrics
	if metricsURL == "" {
		metricsURL = c.Server + "/metrics"
	}
	fams, err := c.metrics(ctx, metricsURL)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	msgs := gaugeValues(fams, "jetcqrs_stream_messages", "stream")
	bytes := gaugeValues(fams, "jetcqrs_stream_bytes", "stream")
	last := gaugeValues(fams, "jetcqrs_stream_last_sequence", "stream")
	for _, name := range []string{"EVENTS", "DLQ"} {
		if _, ok := msgs[name]; ok {
			r.Streams = append(r.Streams, Stream{Name: name, Messages: uint64(msgs[name]), Bytes: uint64(bytes[name]),
				LastSeq: uint64(last[name])})
		}
	}
	relays := c.Relays
	if len(relays) == 0 {
		relays = []string{c.Server}
	}
	for _, base := range relays {
		rl := Relay{Server: base}
		var st relay.Status
		switch err := c.getJSON(ctx, base+"/v1/admin/relay", &st); {
		case errors.Is(err, errNotServed):
			rl.Error = "runs no relay"
		case err != nil:
			rl.Error = err.Error()
		default:
			rl.Status = &st
			rf := fams
			if base != c.Server {
				rf, _ = c.metrics(ctx, base+"/metrics")
			}
			if v, ok := gaugeValues(rf, "jetcqrs_relay_confirmed_lsn_age_seconds", "")[""]; ok {
				rl.ConfirmedLSNAgeSeconds = &v
			}
		}
		r.Relays = append(r.Relays, rl)
	}
	var before []lifecycle.Status
	for _, m := range r.Models {
		if m.Rebuild != nil {
			before = r.Models
			break
		}
	}
	if before != nil {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(RebuildSampleWindow):
		}
		if r.Models, err = c.Models(ctx); err != nil {
			return nil, err
		}
	}
	r.Alerts = Evaluate(r, before)
	return r, nil
}

// Evaluate returns the alert conditions that hold in r: the conditions of
// deploy/prometheus/alerts.yml on one look (before: the models read
// RebuildSampleWindow earlier while a rebuild ran, else nil).
func Evaluate(r *Report, before []lifecycle.Status) []Alert {
	var out []Alert
	leader := false
	for _, rl := range r.Relays {
		if rl.Status == nil {
			continue
		}
		st := rl.Status
		leader = leader || st.Leader
		stuck := rl.ConfirmedLSNAgeSeconds != nil && *rl.ConfirmedLSNAgeSeconds >= SlotStuckAfter.Seconds()
		if st.Leader && st.SlotLagBytes > SlotLagAlertBytes && stuck {
			out = append(out, Alert{Name: "JetcqrsSlotLagGrowing", Subject: st.Slot,
				Message: fmt.Sprintf("slot %s holds %s of WAL and its confirmed position has not moved for %s",
					st.Slot, IBytes(uint64(st.SlotLagBytes)), time.Duration(*rl.ConfirmedLSNAgeSeconds*float64(time.Second)).Round(time.Second))})
		}
	}
	if !leader {
		out = append(out, Alert{Name: "JetcqrsRelayWithoutLeader", Message: "no relay reports the lead: committed events are not published"})
	}
	prev := map[string]lifecycle.Status{}
	for _, m := range before {
		prev[m.Name] = m
	}
	for _, m := range r.Models {
		if lag := time.Duration(m.LagMS) * time.Millisecond; lag > ProjectionLagBound {
			out = append(out, Alert{Name: "JetcqrsProjectionLagging", Subject: m.Name,
				Message: fmt.Sprintf("read model %s has not applied an event for %s (bound %s)", m.Name, lag, ProjectionLagBound)})
		}
		if m.DeadLetters > 0 {
			out = append(out, Alert{Name: "JetcqrsDeadLetters", Subject: m.Name,
				Message: fmt.Sprintf("read model %s has %d dead-lettered events (jetcqrs dlq list)", m.Name, m.DeadLetters)})
		}
		if p, ok := prev[m.Name]; ok && m.Rebuild != nil && p.Rebuild != nil && m.Rebuild.Generation == p.Rebuild.Generation &&
			m.Rebuild.Done == p.Rebuild.Done && m.Rebuild.Done < m.Rebuild.Total {
			out = append(out, Alert{Name: "JetcqrsRebuildStalled", Subject: m.Name,
				Message: fmt.Sprintf("the rebuild of %s into %s applied nothing in %s (%d of %d)", m.Name, m.Rebuild.Generation,
					RebuildSampleWindow, m.Rebuild.Done, m.Rebuild.Total)})
		}
	}
	return out
}
