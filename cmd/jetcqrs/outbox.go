package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetcqrs/jetcqrs/relay"
)

func outboxCmd(cfg *Config) *cobra.Command {
	root := &cobra.Command{
		Use:   "outbox",
		Short: "Maintain the write store's outbox of events",
	}
	var olderThan string
	prune := &cobra.Command{
		Use:   "prune --older-than D",
		Short: "Delete outbox events older than D that the event stream holds (never one it does not)",
		Long: "Delete the outbox events that occurred more than D ago (e.g. 720h or 30d) and that the relay " +
			"recorded as stored in the event stream. Events the stream does not hold are kept, however old.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := parseAge(olderThan)
			if err != nil {
				return fmt.Errorf("--older-than: %w", err)
			}
			n, err := relay.PruneOutbox(cmd.Context(), cfg.DatabaseURL, d)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d outbox events deleted\n", n)
			return nil
		},
	}
	prune.Flags().StringVar(&olderThan, "older-than", "", "age of the events to delete: a Go duration (720h) or days (30d)")
	_ = prune.MarkFlagRequired("older-than")
	root.AddCommand(prune)
	return root
}

// parseAge reads a Go duration or a whole number of days ("30d").
func parseAge(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%q: want a duration such as 720h or a number of days such as 30d", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q: want a duration such as 720h or a number of days such as 30d", s)
	}
	return d, nil
}
