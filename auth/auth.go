// Package auth issues and verifies the HS256 bearer tokens of the HTTP API and
// turns a verified token into the domain's Actor.
package auth

import (
	"errors"
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/jetcqrs/jetcqrs/domain"
)

// MinSecretLen is the shortest accepted HS256 secret (256 bits).
const MinSecretLen = 32

// ErrInvalidToken wraps every reason a token is refused.
var ErrInvalidToken = errors.New("invalid token")

type claims struct {
	Role string `json:"role"`
	jwt.RegisteredClaims
}

// Tokens issues and verifies tokens with one secret.
type Tokens struct {
	secret []byte
	parser *jwt.Parser
	now    func() time.Time
}

// New returns Tokens for secret, which must be at least MinSecretLen bytes.
func New(secret []byte) (*Tokens, error) {
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("JWT secret must be at least %d bytes, got %d", MinSecretLen, len(secret))
	}
	return &Tokens{
		secret: secret,
		parser: jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(),
			jwt.WithLeeway(5*time.Second)),
		now: time.Now,
	}, nil
}

// Issue returns a signed token for subject and role that expires after ttl.
func (t *Tokens) Issue(subject string, role domain.Role, ttl time.Duration) (string, error) {
	if !validSubject(subject) {
		return "", fmt.Errorf("subject must be 1..%d printable characters", domain.MaxUserIDLen)
	}
	if !role.Valid() {
		return "", fmt.Errorf("role must be %q or %q, got %q", domain.RoleCustomer, domain.RoleAdmin, role)
	}
	if ttl <= 0 {
		return "", errors.New("ttl must be positive")
	}
	now := t.now()
	c := claims{Role: string(role), RegisteredClaims: jwt.RegisteredClaims{
		Subject:   subject,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(t.secret)
}

// Verify checks the signature, algorithm and expiry of token and returns its
// actor. Every failure wraps ErrInvalidToken.
func (t *Tokens) Verify(token string) (domain.Actor, error) {
	var c claims
	_, err := t.parser.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return t.secret, nil })
	if err != nil {
		return domain.Actor{}, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	role := domain.Role(c.Role)
	if !validSubject(c.Subject) || !role.Valid() {
		return domain.Actor{}, fmt.Errorf("%w: sub (1..%d printable characters) and role (customer or admin) are required",
			ErrInvalidToken, domain.MaxUserIDLen)
	}
	return domain.Actor{Subject: c.Subject, Role: role}, nil
}

// validSubject accepts what can be a user id everywhere it is stored: valid
// UTF-8 of 1..MaxUserIDLen bytes without control characters.
func validSubject(s string) bool {
	if s == "" || len(s) > domain.MaxUserIDLen || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}
