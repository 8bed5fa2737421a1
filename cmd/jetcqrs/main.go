// Command jetcqrs is the one binary of jetcqrs: the command API, the relay,
// the projectors and the query API, together (serve) or alone, plus the
// operational subcommands.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetcqrs/jetcqrs/auth"
	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/postgres"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "jetcqrs:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	cfg := &Config{}
	root := &cobra.Command{
		Use:           "jetcqrs",
		Short:         "CQRS e-commerce back end: PostgreSQL outbox → NATS JetStream → read models",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			return cfg.Validate()
		},
	}
	cfg.bind(root.PersistentFlags())
	root.AddCommand(
		runCmd(cfg, "serve", "Run the whole system in one process (migrates the schema first)",
			All),
		runCmd(cfg, "command-api", "Run the command API alone", Components{CommandAPI: true}),
		runCmd(cfg, "relay", "Run the outbox relay alone (PostgreSQL → NATS JetStream)", Components{Relay: true}),
		runCmd(cfg, "projector", "Run the projectors alone (NATS JetStream → read models)", Components{Projector: true}),
		runCmd(cfg, "query-api", "Run the query API alone: on the shared engines with ELASTICSEARCH_URL, else as a read node keeping its own read models", Components{QueryAPI: true}),
		runCmd(cfg, "broker", "Run the embedded NATS server alone, for processes started apart (they set NATS_URL)",
			Components{Broker: true}),
		migrateCmd(cfg), tokenCmd(cfg), dlqCmd(cfg), outboxCmd(cfg), versionCmd())
	return root
}

func newLogger(cfg *Config) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func runCmd(cfg *Config, use, short string, comp Components) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := NewMain(cmd.Context(), cfg, comp, newLogger(cfg))
			if err != nil {
				return err
			}
			defer m.Close()
			return m.Run(cmd.Context())
		},
	}
}

func migrateCmd(cfg *Config) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply pending schema migrations (status: list them)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return postgres.Migrate(cmd.Context(), cfg.DatabaseURL, newLogger(cfg))
		},
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "List migrations and whether each is applied",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := postgres.MigrationStatus(cmd.Context(), cfg.DatabaseURL)
			if err != nil {
				return err
			}
			for _, s := range st {
				applied := "pending"
				if !s.AppliedAt.IsZero() {
					applied = "applied " + s.AppliedAt.UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%05d  %-40s  %s\n", s.Source.Version, s.Source.Path, applied)
			}
			return nil
		},
	})
	return cmd
}

func tokenCmd(cfg *Config) *cobra.Command {
	var sub, role string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Print a signed bearer token for a subject and role",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			secret, err := cfg.Secret()
			if err != nil {
				return err
			}
			tokens, err := auth.New(secret)
			if err != nil {
				return err
			}
			tok, err := tokens.Issue(sub, domain.Role(role), ttl)
			if err != nil {
				return fmt.Errorf("token: %w", err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			return nil
		},
	}
	cmd.Flags().StringVar(&sub, "sub", "", "subject (user id)")
	cmd.Flags().StringVar(&role, "role", string(domain.RoleCustomer), "customer or admin")
	cmd.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "lifetime")
	_ = cmd.MarkFlagRequired("sub")
	return cmd
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the build version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), "jetcqrs", buildVersion())
			return nil
		},
	}
}

func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " " + s.Value[:12]
		}
	}
	return v + " " + bi.GoVersion
}
