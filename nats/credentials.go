package nats

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	natsgo "github.com/nats-io/nats.go"
)

// EmbeddedUser is the one user the embedded server admits; its password is
// generated into ServerConfig.PasswordFile.
const EmbeddedUser = "jetcqrs"

// minPasswordLen is the length of a generated password (256 random bits in
// hex); a shorter one found on disk was not made by jetcqrs.
const minPasswordLen = 64

// Credentials authenticate a client to an external NATS server. The fields
// mirror the nats CLI's settings ($NATS_CREDS, $NATS_NKEY, $NATS_USER,
// $NATS_PASSWORD, $NATS_TOKEN, $NATS_CA, $NATS_CERT, $NATS_KEY), so one
// environment serves both. The zero value connects without credentials.
type Credentials struct {
	// CredsFile is a decentralized-auth credentials file (JWT and nkey seed).
	CredsFile string
	// NKeyFile is a file holding a user nkey seed.
	NKeyFile string
	// User and Password authenticate with a user name and password.
	User     string
	Password string
	// Token authenticates with a bearer token.
	Token string
	// CAFile verifies the server's TLS certificate.
	CAFile string
	// CertFile and KeyFile are a TLS client certificate and its key.
	CertFile string
	KeyFile  string
}

// IsZero reports whether no credential and no TLS file is set.
func (c Credentials) IsZero() bool { return c == Credentials{} }

// Validate reports contradictory or incomplete settings: one way of
// authenticating at most, a password only with a user, a certificate only
// with its key.
func (c Credentials) Validate() error {
	var ways []string
	for _, w := range []struct{ name, v string }{
		{"NATS_CREDS", c.CredsFile}, {"NATS_NKEY", c.NKeyFile}, {"NATS_USER", c.User}, {"NATS_TOKEN", c.Token},
	} {
		if w.v != "" {
			ways = append(ways, w.name)
		}
	}
	switch {
	case len(ways) > 1:
		return fmt.Errorf("nats: credentials: set one of %s, not all of them", strings.Join(ways, ", "))
	case c.Password != "" && c.User == "":
		return errors.New("nats: credentials: NATS_PASSWORD needs NATS_USER")
	case (c.CertFile == "") != (c.KeyFile == ""):
		return errors.New("nats: credentials: NATS_CERT and NATS_KEY go together")
	}
	return nil
}

// Options turns the credentials into connect options for Connect.
func (c Credentials) Options() ([]natsgo.Option, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var opts []natsgo.Option
	switch {
	case c.CredsFile != "":
		opts = append(opts, natsgo.UserCredentials(c.CredsFile))
	case c.NKeyFile != "":
		opt, err := natsgo.NkeyOptionFromSeed(c.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("nats: credentials: NATS_NKEY: %w", err)
		}
		opts = append(opts, opt)
	case c.User != "":
		opts = append(opts, natsgo.UserInfo(c.User, c.Password))
	case c.Token != "":
		opts = append(opts, natsgo.Token(c.Token))
	}
	if c.CAFile != "" {
		opts = append(opts, natsgo.RootCAs(c.CAFile))
	}
	if c.CertFile != "" {
		opts = append(opts, natsgo.ClientCert(c.CertFile, c.KeyFile))
	}
	return opts, nil
}

// ReadPassword returns the password kept in path by an embedded server, or
// an error wrapping os.ErrNotExist when no server has made one there yet.
func ReadPassword(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("nats: read password: %w", err)
	}
	pw := strings.TrimSpace(string(b))
	if len(pw) < minPasswordLen {
		return "", fmt.Errorf("nats: %s holds a password shorter than %d characters; delete it to have a new one generated",
			path, minPasswordLen)
	}
	return pw, nil
}

// loadOrCreatePassword returns the password kept in path, creating the file
// (mode 0600) with 256 random bits on first use. Processes starting at once
// agree on one password: the file is published whole with a hard link, and
// the loser of that race reads the winner's.
func loadOrCreatePassword(path string) (string, error) {
	pw, err := ReadPassword(path)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return pw, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("nats: password directory: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	pw = hex.EncodeToString(raw)
	tmp, err := os.CreateTemp(dir, ".nats-password-*") // mode 0600
	if err != nil {
		return "", fmt.Errorf("nats: password file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(pw + "\n"); err != nil {
		tmp.Close()
		return "", fmt.Errorf("nats: password file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", fmt.Errorf("nats: password file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("nats: password file: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return ReadPassword(path)
		}
		return "", fmt.Errorf("nats: create %s: %w", path, err)
	}
	return pw, nil
}
