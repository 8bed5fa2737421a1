package main

import (
	"errors"
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetcqrs/jetcqrs/adminapi"
	"github.com/jetcqrs/jetcqrs/auth"
	"github.com/jetcqrs/jetcqrs/domain"
)

func dlqCmd(cfg *Config) *cobra.Command {
	var server, projection string
	var limit int
	root := &cobra.Command{
		Use:   "dlq",
		Short: "Inspect and replay dead-lettered events (talks to the running projector's HTTP API)",
	}
	root.PersistentFlags().StringVar(&server, "server", "", "base URL of the process running the projectors (default http://HTTP_ADDR)")
	root.PersistentFlags().StringVar(&projection, "projection", "", "only this projection (orders, inventory, catalog, sales)")
	client := func() (*adminapi.Client, error) {
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
		return &adminapi.Client{Base: base, Token: tok}, nil
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
			dls, err := c.DeadLetters(cmd.Context(), projection, limit)
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
				dls, err := c.DeadLetters(cmd.Context(), projection, adminapi.MaxListLimit)
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
				if err := c.Replay(cmd.Context(), s); err != nil {
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
