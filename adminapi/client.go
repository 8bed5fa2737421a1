package adminapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/jetcqrs/jetcqrs/internal/httpx"
	"github.com/jetcqrs/jetcqrs/projections"
)

// Client calls the dead-letter routes of a running process.
type Client struct {
	// Base is the process's base URL, e.g. http://127.0.0.1:8080.
	Base string
	// Token is an admin's bearer token.
	Token string
	// HTTP is the client requests go through (default http.DefaultClient).
	HTTP *http.Client
}

// ProblemError is a problem+json answer to a Client call.
type ProblemError struct {
	Status int
	httpx.Problem
}

func (e *ProblemError) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("%d %s (%s)", e.Status, http.StatusText(e.Status), e.Code)
	}
	return fmt.Sprintf("%s (%s)", e.Detail, e.Code)
}

func (c *Client) do(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w (is jetcqrs serve or projector running there?)", c.Base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		p := &ProblemError{Status: resp.StatusCode}
		if json.Unmarshal(body, &p.Problem) == nil && p.Code != "" {
			return p
		}
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return json.Unmarshal(body, out)
}

// DeadLetters lists up to limit dead letters, oldest first, of projection
// ("" for all).
func (c *Client) DeadLetters(ctx context.Context, projection string, limit int) ([]projections.DeadLetter, error) {
	var out struct {
		DeadLetters []projections.DeadLetter `json:"dead_letters"`
	}
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	if projection != "" {
		q.Set("projection", projection)
	}
	err := c.do(ctx, http.MethodGet, "/v1/admin/dlq?"+q.Encode(), &out)
	return out.DeadLetters, err
}

// Replay applies dead letter seq again; the process removes it once it
// applied.
func (c *Client) Replay(ctx context.Context, seq uint64) error {
	var out map[string]any
	return c.do(ctx, http.MethodPost, "/v1/admin/dlq/"+strconv.FormatUint(seq, 10)+"/replay", &out)
}
