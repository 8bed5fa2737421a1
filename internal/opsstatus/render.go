package opsstatus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jetcqrs/jetcqrs/projections/lifecycle"
)

// IBytes renders n in binary units: 512 B, 1.5 KiB, 3.2 MiB.
func IBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Bar is a progress bar of width cells for done of total.
func Bar(done, total uint64, width int) string {
	frac := 1.0
	if total > 0 {
		frac = min(float64(done)/float64(total), 1)
	}
	full := int(frac * float64(width))
	return "[" + strings.Repeat("#", full) + strings.Repeat(".", width-full) + fmt.Sprintf("] %3.0f%%", frac*100)
}

// RebuildLine is one rebuild's progress: bar, counts and ETA.
func RebuildLine(name string, r *lifecycle.RebuildStatus) string {
	eta := "ETA unknown"
	if r.ETASeconds > 0 {
		eta = "ETA " + (time.Duration(r.ETASeconds * float64(time.Second))).Round(time.Second).String()
	}
	return fmt.Sprintf("%-10s -> %-4s %s  %d/%d events  %s", name, r.Generation, Bar(r.Done, r.Total, 30), r.Done, r.Total, eta)
}

// WriteText renders r on one screen.
func WriteText(w io.Writer, r *Report) error {
	fmt.Fprintf(w, "jetcqrs status of %s at %s\n\n", r.Server, r.Taken.Format("2006-01-02 15:04:05 MST"))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RELAY\tMODE\tLEADER\tSLOT\tCONFIRMED LSN\tSLOT LAG\tWAL\tPUBLISHED\tLAST PUBLISH")
	for _, rl := range r.Relays {
		if rl.Status == nil {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\t%s\n", rl.Server, rl.Error)
			continue
		}
		st := rl.Status
		leader := "standby"
		if st.Leader {
			leader = "yes"
		}
		confirmed := orDash(st.ConfirmedLSN)
		if rl.ConfirmedLSNAgeSeconds != nil && *rl.ConfirmedLSNAgeSeconds > 0 {
			confirmed += fmt.Sprintf(" (still %s)", time.Duration(*rl.ConfirmedLSNAgeSeconds*float64(time.Second)).Round(time.Second))
		}
		last := "-"
		if !st.LastPublishAt.IsZero() {
			last = max(r.Taken.Sub(st.LastPublishAt), 0).Round(time.Millisecond).String() + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", rl.Server, st.Mode, leader, orDash(st.Slot), confirmed,
			IBytes(uint64(max(st.SlotLagBytes, 0))), orDash(st.WALStatus), st.Published, last)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "STREAM\tMESSAGES\tSIZE\tLAST SEQ")
	for _, s := range r.Streams {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\n", s.Name, s.Messages, IBytes(s.Bytes), s.LastSeq)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "READ MODEL\tGEN\tSTATE\tPOSITION\tPENDING\tLAG\tDEAD LETTERS\tSTORE")
	for _, m := range r.Models {
		store := "ok"
		if m.Outage != nil {
			store = "failing"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%d\t%s\n", m.Name, m.Generation, m.State, m.LastSeq, m.Pending,
			(time.Duration(m.LagMS) * time.Millisecond).String(), m.DeadLetters, store)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	rebuilds := 0
	for _, m := range r.Models {
		if m.Rebuild != nil {
			if rebuilds == 0 {
				fmt.Fprintln(w, "\nREBUILD")
			}
			rebuilds++
			fmt.Fprintln(w, RebuildLine(m.Name, m.Rebuild))
		}
	}
	if len(r.Alerts) == 0 {
		_, err := fmt.Fprintln(w, "\nALERTS  none")
		return err
	}
	fmt.Fprintln(w, "\nALERTS")
	for _, a := range r.Alerts {
		fmt.Fprintf(w, "  %s: %s\n", a.Name, a.Message)
	}
	return nil
}

// WriteJSON renders r for scripts.
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// StartRebuild asks the projectors to rebuild model and returns the new
// generation's name.
func (c *Client) StartRebuild(ctx context.Context, model string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Server+"/v1/admin/projections/"+model+"/rebuild", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := c.http().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusAccepted {
		var p struct {
			Detail string `json:"detail"`
		}
		if json.Unmarshal(body, &p) == nil && p.Detail != "" {
			return "", fmt.Errorf("rebuild %s: %s", model, p.Detail)
		}
		return "", fmt.Errorf("rebuild %s: %d %s", model, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	var out struct {
		Generation string `json:"generation"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return "", fmt.Errorf("rebuild %s: %w", model, err)
	}
	return out.Generation, nil
}

// Follow reports the rebuild of model into generation every interval, a
// progress line each time (on a terminal the lines overwrite each other:
// pass "\r" as end, else "\n"), until readers are served from generation.
func (c *Client) Follow(ctx context.Context, w io.Writer, model, generation string, interval time.Duration, end string) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	last := ""
	for {
		models, err := c.Models(ctx)
		if err != nil {
			return err
		}
		var m *lifecycle.Status
		for i := range models {
			if models[i].Name == model {
				m = &models[i]
			}
		}
		switch {
		case m == nil:
			return fmt.Errorf("read model %s is not reported by %s", model, c.Server)
		case m.Generation == generation && m.Rebuild == nil:
			// On a terminal the last line overwrites the bar; elsewhere it
			// follows it.
			_, err := fmt.Fprintf(w, "%s%s\n", strings.TrimSuffix(end, "\n"), RebuildLine(model, &lifecycle.RebuildStatus{Status: m.Status, Done: m.LastSeq,
				Total: m.LastSeq})+"  live")
			return err
		case m.Rebuild != nil:
			if line := RebuildLine(model, m.Rebuild); line != last {
				fmt.Fprint(w, line+end)
				last = line
			}
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), fmt.Errorf("the rebuild of %s goes on without being followed", model))
		case <-t.C:
		}
	}
}
