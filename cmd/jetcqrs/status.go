package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetcqrs/jetcqrs/auth"
	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/opsstatus"
)

// errAlerts makes `jetcqrs status` exit 1: an alert condition holds.
var errAlerts = errors.New("alert conditions hold")

// opsClient is the admin client of status and rebuild: --server (default
// http://HTTP_ADDR), an admin token signed with the deployment's secret.
func opsClient(cfg *Config, server, metrics string, relays []string) (*opsstatus.Client, error) {
	if server == "" {
		server = "http://" + cfg.HTTPAddr
	}
	if metrics == "" && cfg.MetricsAddr != "" {
		metrics = "http://" + cfg.MetricsAddr + "/metrics"
	}
	tok, err := adminToken(cfg)
	if err != nil {
		return nil, err
	}
	return &opsstatus.Client{Server: strings.TrimRight(server, "/"), Metrics: metrics, Relays: relays, Token: tok}, nil
}

// adminToken is a short-lived admin token signed with the deployment's
// secret, for the operator's commands.
func adminToken(cfg *Config) (string, error) {
	secret, err := cfg.Secret()
	if err != nil {
		return "", err
	}
	tokens, err := auth.New(secret)
	if err != nil {
		return "", err
	}
	return tokens.Issue("jetcqrs-cli", domain.RoleAdmin, 5*time.Minute)
}

func statusCmd(cfg *Config) *cobra.Command {
	var server, metrics string
	var relays []string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "One screen of a running deployment: relay, slot, streams, read models, rebuilds, alerts (exit 1 on an alert)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := opsClient(cfg, server, metrics, relays)
			if err != nil {
				return err
			}
			r, err := c.Read(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				err = opsstatus.WriteJSON(cmd.OutOrStdout(), r)
			} else {
				err = opsstatus.WriteText(cmd.OutOrStdout(), r)
			}
			if err == nil && len(r.Alerts) > 0 {
				err = errAlerts
			}
			return err
		},
	}
	cmd.Flags().StringVar(&server, "server", "", "base URL of a process running the projectors (default http://HTTP_ADDR)")
	cmd.Flags().StringVar(&metrics, "metrics", "", "its /metrics URL (default http://METRICS_ADDR/metrics, else SERVER/metrics)")
	cmd.Flags().StringSliceVar(&relays, "relay", nil, "base URLs of the relay processes, comma-separated (default SERVER)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func rebuildCmd(cfg *Config) *cobra.Command {
	var server string
	cmd := &cobra.Command{
		Use:   "rebuild MODEL",
		Short: "Rebuild a read model (orders, inventory, catalog, sales) from the stream and follow it until it is live",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := opsClient(cfg, server, "", nil)
			if err != nil {
				return err
			}
			gen, err := c.StartRebuild(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "rebuilding %s into %s\n", args[0], gen)
			end := "\n"
			if f, ok := cmd.OutOrStdout().(*os.File); ok {
				if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
					end = "\r"
				}
			}
			return c.Follow(cmd.Context(), cmd.OutOrStdout(), args[0], gen, 500*time.Millisecond, end)
		},
	}
	cmd.Flags().StringVar(&server, "server", "", "base URL of a process running the projectors (default http://HTTP_ADDR)")
	return cmd
}
