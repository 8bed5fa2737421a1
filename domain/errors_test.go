package domain_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jetcqrs/jetcqrs/domain"
)

func TestErrorCode(t *testing.T) {
	t.Parallel()
	stock := &domain.Error{Code: domain.CodeInsufficientStock, SKU: "apple-1", Message: "not enough"}
	tests := []struct {
		name string
		err  error
		want domain.Code
	}{
		{name: "nil", err: nil, want: ""},
		{name: "plain error", err: errors.New("connection reset"), want: ""},
		{name: "wrapped plain error", err: fmt.Errorf("save: %w", errors.New("timeout")), want: ""},
		{name: "domain error", err: stock, want: domain.CodeInsufficientStock},
		{name: "Errorf", err: domain.Errorf(domain.CodeNotFound, "order %s", "o-1"), want: domain.CodeNotFound},
		{name: "wrapped once", err: fmt.Errorf("place order: %w", stock), want: domain.CodeInsufficientStock},
		{name: "wrapped twice", err: fmt.Errorf("tx: %w", fmt.Errorf("place order: %w", stock)), want: domain.CodeInsufficientStock},
		{name: "joined", err: errors.Join(errors.New("other"), stock), want: domain.CodeInsufficientStock},
		{name: "first domain error in the chain", err: fmt.Errorf("%w: %w", domain.Errorf(domain.CodeConflict, "x"), stock), want: domain.CodeConflict},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := domain.ErrorCode(tc.err); got != tc.want {
				t.Fatalf("ErrorCode(%v) = %q, want %q", tc.err, got, tc.want)
			}
		})
	}
}

func TestErrorText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  *domain.Error
		want []string
	}{
		{
			name: "with field",
			err:  &domain.Error{Code: domain.CodeInvalidRequest, Field: "items.quantity", Message: "must be between 1 and 1000"},
			want: []string{"invalid_request", "items.quantity", "must be between 1 and 1000"},
		},
		{
			name: "without field",
			err:  domain.Errorf(domain.CodeInvalidTransition, "order %s is %s", "o-1", "shipped"),
			want: []string{"invalid_transition", "order o-1 is shipped"},
		},
		{
			name: "code only",
			err:  &domain.Error{Code: domain.CodeUnauthorized},
			want: []string{"unauthorized"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := tc.err.Error()
			for _, w := range tc.want {
				if !strings.Contains(s, w) {
					t.Errorf("Error() = %q, missing %q", s, w)
				}
			}
			if wrapped := fmt.Errorf("op: %w", tc.err).Error(); !strings.HasSuffix(wrapped, s) {
				t.Errorf("wrapped Error() = %q", wrapped)
			}
		})
	}
}

func TestCodesAreStable(t *testing.T) {
	t.Parallel()
	want := map[domain.Code]string{
		domain.CodeInvalidRequest:       "invalid_request",
		domain.CodeUnauthorized:         "unauthorized",
		domain.CodeForbidden:            "forbidden",
		domain.CodeNotFound:             "not_found",
		domain.CodeUnknownSKU:           "unknown_sku",
		domain.CodeAlreadyExists:        "already_exists",
		domain.CodeInsufficientStock:    "insufficient_stock",
		domain.CodeInvalidTransition:    "invalid_transition",
		domain.CodeVersionMismatch:      "version_mismatch",
		domain.CodeIdempotencyKeyReused: "idempotency_key_reused",
		domain.CodeConflict:             "conflict",
	}
	if len(want) != 11 {
		t.Fatalf("codes are not distinct: %d", len(want))
	}
	for code, s := range want {
		if string(code) != s {
			t.Errorf("code %q, want %q", code, s)
		}
	}
}

func TestEventTypesAreDistinct(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, typ := range domain.EventTypes {
		if typ == "" || seen[typ] {
			t.Fatalf("event type %q is empty or listed twice", typ)
		}
		seen[typ] = true
	}
	if len(seen) != 11 {
		t.Fatalf("%d event types, want 11", len(seen))
	}
}

func TestActor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		actor     domain.Actor
		userID    string
		wantAdmin bool
		wantActs  bool
	}{
		{name: "customer for self", actor: alice, userID: "alice", wantActs: true},
		{name: "customer for another", actor: alice, userID: "bob"},
		{name: "customer for a case variant", actor: alice, userID: "Alice"},
		{name: "customer without subject for empty user", actor: domain.Actor{Role: domain.RoleCustomer}, userID: ""},
		{name: "admin for anyone", actor: admin, userID: "bob", wantAdmin: true, wantActs: true},
		{name: "admin without subject", actor: domain.Actor{Role: domain.RoleAdmin}, userID: "bob", wantAdmin: true, wantActs: true},
		{name: "role spelled differently", actor: domain.Actor{Subject: "root", Role: "ADMIN"}, userID: "bob"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := tc.actor.IsAdmin(); got != tc.wantAdmin {
				t.Errorf("IsAdmin() = %v, want %v", got, tc.wantAdmin)
			}
			if got := tc.actor.CanActFor(tc.userID); got != tc.wantActs {
				t.Errorf("CanActFor(%q) = %v, want %v", tc.userID, got, tc.wantActs)
			}
		})
	}
}

func TestRoleValid(t *testing.T) {
	t.Parallel()
	for role, want := range map[domain.Role]bool{
		domain.RoleCustomer: true, domain.RoleAdmin: true, "": false, "Admin": false, "superuser": false,
	} {
		if got := role.Valid(); got != want {
			t.Errorf("Role(%q).Valid() = %v, want %v", role, got, want)
		}
	}
}
