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
	"github.com/hashicorp/golang-lru/v2/expirable"

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

// leeway is the clock skew tolerated on a token's expiry.
const leeway = 5 * time.Second

// Verified tokens are remembered so that a client sending the same token on
// every request pays for its HMAC and JSON once per cacheTTL, not per request.
// Only tokens that passed verification enter the cache, found again by their
// exact text; their own expiry is checked on every hit.
const (
	cacheSize = 16384
	cacheTTL  = time.Minute
)

// Tokens issues and verifies tokens with one secret.
type Tokens struct {
	secret []byte
	parser *jwt.Parser
	now    func() time.Time
	cache  *expirable.LRU[string, verified]
}

type verified struct {
	actor   domain.Actor
	expires time.Time // exp plus the leeway
}

// New returns Tokens for secret, which must be at least MinSecretLen bytes.
func New(secret []byte) (*Tokens, error) {
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("JWT secret must be at least %d bytes, got %d", MinSecretLen, len(secret))
	}
	t := &Tokens{
		secret: secret,
		now:    time.Now,
		cache:  expirable.NewLRU[string, verified](cacheSize, nil, cacheTTL),
	}
	t.parser = jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(),
		jwt.WithLeeway(leeway), jwt.WithTimeFunc(func() time.Time { return t.now() }))
	return t, nil
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
	if v, ok := t.cache.Get(token); ok {
		if t.now().Before(v.expires) {
			return v.actor, nil
		}
		t.cache.Remove(token)
	}
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
	actor := domain.Actor{Subject: c.Subject, Role: role}
	t.cache.Add(token, verified{actor: actor, expires: c.ExpiresAt.Add(leeway)})
	return actor, nil
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
