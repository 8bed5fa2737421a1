package auth

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
)

func TestVerifyRemembersOnlyValidTokensAndHonoursExpiry(t *testing.T) {
	tokens, err := New([]byte(strings.Repeat("s", MinSecretLen)))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokens.Issue("alice", domain.RoleCustomer, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second call is served by the cache
		actor, err := tokens.Verify(tok)
		if err != nil || actor != (domain.Actor{Subject: "alice", Role: domain.RoleCustomer}) {
			t.Fatalf("Verify = %+v, %v", actor, err)
		}
	}
	if tokens.cache.Len() != 1 {
		t.Fatalf("cache holds %d tokens, want 1", tokens.cache.Len())
	}

	// A token differing in its signature is verified on its own, and refused.
	forged := tok[:len(tok)-2] + "AA"
	if forged == tok {
		forged = tok[:len(tok)-2] + "BB"
	}
	if _, err := tokens.Verify(forged); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("forged token: %v, want ErrInvalidToken", err)
	}
	if tokens.cache.Len() != 1 {
		t.Fatalf("a refused token entered the cache")
	}

	// Past its expiry (and the leeway) a cached token is refused and dropped.
	real := tokens.now
	tokens.now = func() time.Time { return real().Add(time.Minute + leeway + time.Second) }
	if _, err := tokens.Verify(tok); err == nil {
		t.Fatal("an expired token was accepted from the cache")
	}
	tokens.now = real
	if _, ok := tokens.cache.Peek(tok); ok {
		t.Fatal("the expired token is still cached")
	}
}

func TestVerifyRefusesOtherSecrets(t *testing.T) {
	a, _ := New([]byte(strings.Repeat("a", MinSecretLen)))
	b, _ := New([]byte(strings.Repeat("b", MinSecretLen)))
	tok, err := a.Issue("bob", domain.RoleAdmin, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Verify(tok); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Verify(tok); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("token of another secret: %v, want ErrInvalidToken", err)
	}
}
