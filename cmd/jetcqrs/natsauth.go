package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"

	natsgo "github.com/nats-io/nats.go"
	"github.com/spf13/pflag"

	jnats "github.com/jetcqrs/jetcqrs/nats"
)

// bindNATSCredentials binds the settings that reach an external NATS
// server, under the nats CLI's environment names.
func (c *Config) bindNATSCredentials(fs *pflag.FlagSet) {
	fs.StringVar(&c.NATSCreds, "nats-creds", "", "credentials file (user JWT and nkey seed) for nats-url")
	fs.StringVar(&c.NATSNKey, "nats-nkey", "", "user nkey seed file for nats-url")
	fs.StringVar(&c.NATSUser, "nats-user", "", "user name for nats-url")
	fs.StringVar(&c.NATSPassword, "nats-password", "", "password of nats-user")
	fs.StringVar(&c.NATSToken, "nats-token", "", "token for nats-url")
	fs.StringVar(&c.NATSCA, "nats-ca", "", "CA certificate file that verifies the TLS certificate of nats-url")
	fs.StringVar(&c.NATSCert, "nats-cert", "", "TLS client certificate file for nats-url")
	fs.StringVar(&c.NATSKey, "nats-key", "", "key file of nats-cert")
}

func (c *Config) natsCredentials() jnats.Credentials {
	return jnats.Credentials{
		CredsFile: c.NATSCreds, NKeyFile: c.NATSNKey, User: c.NATSUser, Password: c.NATSPassword, Token: c.NATSToken,
		CAFile: c.NATSCA, CertFile: c.NATSCert, KeyFile: c.NATSKey,
	}
}

// natsPasswordFile is where the embedded server keeps the password it
// admits, generated on its first start.
func (c *Config) natsPasswordFile() string { return filepath.Join(c.DataDir, "nats-password") }

// natsOptions are the connect options for url. The embedded server's URL
// carries its credentials. For an external one (NATS_URL) they are the
// NATS_* credentials, or, when neither those nor the URL authenticate, the
// password in DATA_DIR/nats-password: that of a `jetcqrs broker` sharing the
// data directory.
func (c *Config) natsOptions() ([]natsgo.Option, error) {
	if c.NATSURL == "" {
		return nil, nil
	}
	creds := c.natsCredentials()
	authenticates := creds.CredsFile != "" || creds.NKeyFile != "" || creds.User != "" || creds.Token != "" ||
		strings.Contains(c.NATSURL, "@")
	if !authenticates {
		pw, err := jnats.ReadPassword(c.natsPasswordFile())
		switch {
		case err == nil:
			creds.User, creds.Password = jnats.EmbeddedUser, pw
		case !errors.Is(err, os.ErrNotExist):
			return nil, err
		}
	}
	return creds.Options()
}

// connectNATS connects to url (the embedded server's or NATS_URL) with the
// credentials natsOptions gives.
func (m *Main) connectNATS(ctx context.Context, url, name string) (*natsgo.Conn, error) {
	opts, err := m.cfg.natsOptions()
	if err != nil {
		return nil, err
	}
	return jnats.Connect(ctx, url, name, m.logger, opts...)
}
