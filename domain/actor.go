package domain

// Role is what an authenticated caller may do.
type Role string

const (
	RoleCustomer Role = "customer"
	RoleAdmin    Role = "admin"
)

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return r == RoleCustomer || r == RoleAdmin }

// Actor is the authenticated caller of a command.
type Actor struct {
	Subject string
	Role    Role
}

// IsAdmin reports whether the actor may do anything.
func (a Actor) IsAdmin() bool { return a.Role == RoleAdmin }

// CanActFor reports whether the actor may act on behalf of userID: admins for
// anyone, customers for themselves only, an actor without a known role for
// nobody.
func (a Actor) CanActFor(userID string) bool {
	return a.IsAdmin() || (a.Role == RoleCustomer && a.Subject != "" && a.Subject == userID)
}

func requireAdmin(a Actor, action string) error {
	if !a.IsAdmin() {
		return Errorf(CodeForbidden, "only an admin may %s", action)
	}
	return nil
}

func requireActFor(a Actor, userID, action string) error {
	if !a.CanActFor(userID) {
		return Errorf(CodeForbidden, "not allowed to %s for another user", action)
	}
	return nil
}
