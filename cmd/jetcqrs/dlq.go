package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/spf13/cobra"

	"github.com/jetcqrs/jetcqrs/auth"
	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/httpx"
	"github.com/jetcqrs/jetcqrs/projections"
)

// mountDLQ serves the dead-letter admin endpoints of the process that runs
// the projectors (replay needs their stores).
func (m *Main) mountDLQ(r chi.Router, tokens *auth.Tokens) {
	r.Group(func(r chi.Router) {
		r.Use(httpx.Authenticate(tokens), requireAdmin)
		r.Get("/v1/admin/dlq", func(w http.ResponseWriter, req *http.Request) {
			limit, err := strconv.Atoi(req.URL.Query().Get("limit"))
			if req.URL.Query().Get("limit") == "" {
				limit, err = 100, nil
			}
			if err != nil || limit < 1 || limit > 10000 {
				httpx.WriteError(w, req, m.logger, &domain.Error{Code: domain.CodeInvalidRequest, Field: "limit", Message: "must be 1..10000"})
				return
			}
			dls, err := m.models.DeadLetters(req.Context(), req.URL.Query().Get("projection"), limit)
			if err != nil {
				httpx.WriteError(w, req, m.logger, err)
				return
			}
			httpx.WriteJSON(w, http.StatusOK, map[string]any{"dead_letters": dls})
		})
		r.Post("/v1/admin/dlq/{seq}/replay", func(w http.ResponseWriter, req *http.Request) {
			seq, err := strconv.ParseUint(chi.URLParam(req, "seq"), 10, 64)
			if err != nil || seq == 0 {
				httpx.WriteProblem(w, req, domain.CodeNotFound, "no such dead letter")
				return
			}
			switch err := m.models.Replay(req.Context(), seq); {
			case errors.Is(err, projections.ErrNoSuchDeadLetter):
				httpx.WriteProblem(w, req, domain.CodeNotFound, err.Error())
			case err != nil:
				httpx.WriteProblem(w, req, domain.CodeConflict, err.Error())
			default:
				httpx.WriteJSON(w, http.StatusOK, map[string]any{"replayed": seq})
			}
		})
	})
}

func dlqCmd(cfg *Config) *cobra.Command {
	var server, projection string
	var limit int
	root := &cobra.Command{
		Use:   "dlq",
		Short: "Inspect and replay dead-lettered events (talks to the running projector's HTTP API)",
	}
	root.PersistentFlags().StringVar(&server, "server", "", "base URL of the process running the projectors (default http://HTTP_ADDR)")
	root.PersistentFlags().StringVar(&projection, "projection", "", "only this projection (orders, inventory, catalog, sales)")
	client := func() (*adminClient, error) {
		base := server
		if base == "" {
			base = "http://" + cfg.HTTPAddr
		}
		secret, err := cfg.Secret()
		if err != nil {
			return nil, err
		}
		tokens, err := auth.New(secret)
		if err != nil {
			return nil, err
		}
		tok, err := tokens.Issue("jetcqrs-cli", domain.RoleAdmin, 5*time.Minute)
		if err != nil {
			return nil, err
		}
		return &adminClient{base: base, token: tok}, nil
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List dead letters, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			dls, err := c.list(cmd.Context(), projection, limit)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "DLQ SEQ\tPROJECTION\tSTREAM SEQ\tSUBJECT\tREASON")
			for _, d := range dls {
				fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\n", d.DLQSeq, d.Projection, d.StreamSeq, d.Subject, d.Reason)
			}
			return tw.Flush()
		},
	}
	list.Flags().IntVar(&limit, "limit", 100, "most entries to list")
	var all bool
	replay := &cobra.Command{
		Use:   "replay [DLQ_SEQ ...]",
		Short: "Apply dead letters to their projection again; each is removed once it applies",
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client()
			if err != nil {
				return err
			}
			var seqs []uint64
			for _, a := range args {
				n, err := strconv.ParseUint(a, 10, 64)
				if err != nil {
					return fmt.Errorf("%q is not a dead-letter sequence", a)
				}
				seqs = append(seqs, n)
			}
			if all {
				dls, err := c.list(cmd.Context(), projection, 10000)
				if err != nil {
					return err
				}
				for _, d := range dls {
					seqs = append(seqs, d.DLQSeq)
				}
			}
			if len(seqs) == 0 {
				return errors.New("name dead-letter sequences or pass --all")
			}
			var failed int
			for i, s := range seqs {
				if err := c.replay(cmd.Context(), s); err != nil {
					failed++
					fmt.Fprintf(cmd.ErrOrStderr(), "[%d/%d] %d: %v\n", i+1, len(seqs), s, err)
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "[%d/%d] %d replayed\n", i+1, len(seqs), s)
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d dead letters did not replay", failed, len(seqs))
			}
			return nil
		},
	}
	replay.Flags().BoolVar(&all, "all", false, "replay every dead letter (of --projection)")
	root.AddCommand(list, replay)
	return root
}

type adminClient struct {
	base, token string
}

func (c *adminClient) do(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w (is jetcqrs serve or projector running there?)", c.base, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode >= 300 {
		var p httpx.Problem
		if json.Unmarshal(body, &p) == nil && p.Detail != "" {
			return fmt.Errorf("%s (%s)", p.Detail, p.Code)
		}
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return json.Unmarshal(body, out)
}

func (c *adminClient) list(ctx context.Context, projection string, limit int) ([]projections.DeadLetter, error) {
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

func (c *adminClient) replay(ctx context.Context, seq uint64) error {
	var out map[string]any
	return c.do(ctx, http.MethodPost, "/v1/admin/dlq/"+strconv.FormatUint(seq, 10)+"/replay", &out)
}
