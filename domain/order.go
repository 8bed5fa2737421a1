package domain

import (
	"slices"
	"strings"
	"time"
)

// OrderStatus is where an order is in its life cycle:
// placed → paid → shipped → delivered, and placed|paid → cancelled.
type OrderStatus string

const (
	StatusPlaced    OrderStatus = "placed"
	StatusPaid      OrderStatus = "paid"
	StatusShipped   OrderStatus = "shipped"
	StatusDelivered OrderStatus = "delivered"
	StatusCancelled OrderStatus = "cancelled"
)

// PaymentMethods are the accepted payment methods.
var PaymentMethods = []string{"card", "paypal", "invoice"}

// OrderLineRequest is one requested line of PlaceOrder.
type OrderLineRequest struct {
	SKU      string
	Quantity int64
}

// PlaceOrder is the command to place an order. Prices come from the catalog at
// placement, never from the client. The payment token is checked for shape and
// never stored.
type PlaceOrder struct {
	UserID        string
	Items         []OrderLineRequest
	PaymentMethod string
	PaymentToken  string
}

// Validate checks the command against the contract's limits.
func (c PlaceOrder) Validate() error {
	if err := checkText("user_id", c.UserID, 1, MaxUserIDLen, false); err != nil {
		return err
	}
	if len(c.Items) < 1 || len(c.Items) > MaxOrderItems {
		return invalid("items", "must have 1 to %d items", MaxOrderItems)
	}
	seen := make(map[string]struct{}, len(c.Items))
	for _, it := range c.Items {
		if err := checkSKU("items.sku", it.SKU); err != nil {
			return err
		}
		if _, dup := seen[it.SKU]; dup {
			return &Error{Code: CodeInvalidRequest, Field: "items", SKU: it.SKU, Message: "duplicate sku " + it.SKU}
		}
		seen[it.SKU] = struct{}{}
		if it.Quantity < MinQuantity || it.Quantity > MaxQuantity {
			return &Error{Code: CodeInvalidRequest, Field: "items.quantity", SKU: it.SKU,
				Message: "must be between 1 and 1000"}
		}
	}
	if !slices.Contains(PaymentMethods, c.PaymentMethod) {
		return invalid("payment.method", "must be one of %s", strings.Join(PaymentMethods, ", "))
	}
	return checkText("payment.token", c.PaymentToken, 1, MaxPaymentTokenLen, false)
}

// Authorize checks that actor may place the order: an admin for anyone, a
// customer for themselves.
func (c PlaceOrder) Authorize(actor Actor) error {
	return requireActFor(actor, c.UserID, "place orders")
}

// SKUs returns the command's SKUs in ascending order: the order in which stock
// rows are locked, so that concurrent orders never deadlock.
func (c PlaceOrder) SKUs() []string {
	skus := make([]string, len(c.Items))
	for i, it := range c.Items {
		skus[i] = it.SKU
	}
	slices.Sort(skus)
	return skus
}

// CatalogEntry is what an order needs to know of a product at placement.
type CatalogEntry struct {
	SKU        string
	Name       string
	Category   string
	PriceCents int64
}

// Order is a customer's order.
type Order struct {
	s OrderSnapshot
}

// PlaceNewOrder validates and authorizes cmd, prices it from catalog and
// reserves its stock. It returns the order at version 1 and its events:
// OrderPlaced, then one InventoryReserved per SKU in SKU order. On error the
// inventories are unchanged.
func PlaceNewOrder(id string, actor Actor, cmd PlaceOrder, catalog map[string]CatalogEntry, stock map[string]*Inventory, now time.Time) (*Order, []Event, error) {
	if err := cmd.Validate(); err != nil {
		return nil, nil, err
	}
	if err := cmd.Authorize(actor); err != nil {
		return nil, nil, err
	}
	now = now.UTC()
	lines := make([]OrderLine, 0, len(cmd.Items))
	var total int64
	for _, it := range cmd.Items {
		entry, ok := catalog[it.SKU]
		inv := stock[it.SKU]
		if !ok || inv == nil {
			return nil, nil, &Error{Code: CodeUnknownSKU, SKU: it.SKU, Message: "unknown sku " + it.SKU}
		}
		lines = append(lines, OrderLine{SKU: it.SKU, Name: entry.Name, Category: entry.Category,
			Quantity: it.Quantity, PriceCents: entry.PriceCents})
		total += it.Quantity * entry.PriceCents
	}
	byQty := make(map[string]int64, len(cmd.Items))
	for _, it := range cmd.Items {
		byQty[it.SKU] = it.Quantity
	}
	skus := cmd.SKUs()
	for _, sku := range skus {
		if stock[sku].Available() < byQty[sku] {
			return nil, nil, &Error{Code: CodeInsufficientStock, SKU: sku, Message: "not enough stock for sku " + sku}
		}
	}
	o := &Order{s: OrderSnapshot{
		OrderID:       id,
		UserID:        cmd.UserID,
		Status:        StatusPlaced,
		Items:         lines,
		TotalCents:    total,
		PaymentMethod: cmd.PaymentMethod,
		Version:       1,
		PlacedAt:      now,
		UpdatedAt:     now,
	}}
	events := []Event{newEvent(AggregateOrder, id, 1, EventOrderPlaced, now, OrderPlaced{o.Snapshot()})}
	for _, sku := range skus {
		ev, err := stock[sku].reserve(id, byQty[sku], now)
		if err != nil {
			return nil, nil, err // unreachable: availability was checked above
		}
		events = append(events, ev)
	}
	return o, events, nil
}

// RehydrateOrder rebuilds an order from stored state.
func RehydrateOrder(s OrderSnapshot) *Order {
	s.Items = slices.Clone(s.Items)
	return &Order{s: s}
}

// Snapshot returns a copy of the order's state.
func (o *Order) Snapshot() OrderSnapshot {
	s := o.s
	s.Items = slices.Clone(o.s.Items)
	return s
}

// ID returns the order id.
func (o *Order) ID() string { return o.s.OrderID }

// UserID returns the owner.
func (o *Order) UserID() string { return o.s.UserID }

// Status returns the current status.
func (o *Order) Status() OrderStatus { return o.s.Status }

// Version returns the order's version.
func (o *Order) Version() int64 { return o.s.Version }

// Lines returns the order lines.
func (o *Order) Lines() []OrderLine { return slices.Clone(o.s.Items) }

// OrderTransition names a command that moves an order along its life cycle.
type OrderTransition string

const (
	TransitionPay     OrderTransition = "pay"
	TransitionShip    OrderTransition = "ship"
	TransitionDeliver OrderTransition = "deliver"
	TransitionCancel  OrderTransition = "cancel"
)

// OrderTransitions lists every transition.
var OrderTransitions = []OrderTransition{TransitionPay, TransitionShip, TransitionDeliver, TransitionCancel}

// transitionRule is who may apply a transition, from which statuses, and
// whether it moves the order's stock.
type transitionRule struct {
	from       []OrderStatus
	to         OrderStatus
	adminOnly  bool   // else the owner or an admin
	action     string // as the forbidden error names it
	movesStock bool
}

var transitionRules = map[OrderTransition]transitionRule{
	TransitionPay:     {from: []OrderStatus{StatusPlaced}, to: StatusPaid, action: "pay orders"},
	TransitionShip:    {from: []OrderStatus{StatusPaid}, to: StatusShipped, adminOnly: true, action: "ship orders", movesStock: true},
	TransitionDeliver: {from: []OrderStatus{StatusShipped}, to: StatusDelivered, adminOnly: true, action: "mark orders delivered"},
	TransitionCancel:  {from: []OrderStatus{StatusPlaced, StatusPaid}, to: StatusCancelled, action: "cancel orders", movesStock: true},
}

func unknownTransition() error {
	return invalid("transition", "must be one of pay, ship, deliver, cancel")
}

func (o *Order) authorize(actor Actor, r transitionRule) error {
	if r.adminOnly {
		return requireAdmin(actor, r.action)
	}
	return requireActFor(actor, o.s.UserID, r.action)
}

// StockToLock checks that actor may apply t to the order at all and returns
// the SKUs, in lock order, whose stock t would move from the order's current
// status: every line's for ship and cancel when the status allows them, none
// otherwise. The store locks those stock rows, and only those, before Apply.
func (o *Order) StockToLock(actor Actor, t OrderTransition) ([]string, error) {
	r, ok := transitionRules[t]
	if !ok {
		return nil, unknownTransition()
	}
	if err := o.authorize(actor, r); err != nil {
		return nil, err
	}
	if !r.movesStock || !slices.Contains(r.from, o.s.Status) {
		return nil, nil
	}
	return o.SKUs(), nil
}

// Apply runs the transition t (Pay, Ship, Deliver or Cancel) and returns its
// events. stock must hold the inventories StockToLock named.
func (o *Order) Apply(actor Actor, t OrderTransition, reason string, stock map[string]*Inventory, now time.Time) ([]Event, error) {
	var ev Event
	var err error
	switch t {
	case TransitionShip:
		return o.Ship(actor, stock, now)
	case TransitionCancel:
		return o.Cancel(actor, reason, stock, now)
	case TransitionPay:
		ev, err = o.Pay(actor, now)
	case TransitionDeliver:
		ev, err = o.Deliver(actor, now)
	default:
		err = unknownTransition()
	}
	if err != nil {
		return nil, err
	}
	return []Event{ev}, nil
}

// begin authorizes actor, checks the reason given and moves the order along
// t; on error nothing changes.
func (o *Order) begin(actor Actor, t OrderTransition, reason string, now time.Time) error {
	r := transitionRules[t]
	if err := o.authorize(actor, r); err != nil {
		return err
	}
	if err := checkText("reason", reason, 0, MaxReasonLen, false); err != nil {
		return err
	}
	if !slices.Contains(r.from, o.s.Status) {
		return Errorf(CodeInvalidTransition, "order %s is %s and cannot become %s", o.s.OrderID, o.s.Status, r.to)
	}
	o.s.Status = r.to
	o.s.Version++
	o.s.UpdatedAt = now.UTC()
	return nil
}

func (o *Order) event(typ string, payload any) Event {
	return newEvent(AggregateOrder, o.s.OrderID, o.s.Version, typ, o.s.UpdatedAt, payload)
}

// Pay marks a placed order paid. The owner or an admin may pay.
func (o *Order) Pay(actor Actor, now time.Time) (Event, error) {
	if err := o.begin(actor, TransitionPay, "", now); err != nil {
		return Event{}, err
	}
	return o.event(EventOrderPaid, OrderPaid{o.Snapshot()}), nil
}

// Ship marks a paid order shipped and takes its reserved units out of stock:
// OrderShipped, then one InventoryShipped per line in SKU order. Admins only.
// stock must hold the inventory of every line. On error nothing changes.
func (o *Order) Ship(actor Actor, stock map[string]*Inventory, now time.Time) ([]Event, error) {
	prev := o.Snapshot()
	if err := o.begin(actor, TransitionShip, "", now); err != nil {
		return nil, err
	}
	events := []Event{o.event(EventOrderShipped, OrderShipped{o.Snapshot()})}
	return o.applyToStock(prev, events, stock, func(inv *Inventory, l OrderLine) (Event, error) {
		return inv.ship(o.s.OrderID, l.Quantity, o.s.UpdatedAt)
	})
}

// Deliver marks a shipped order delivered. Admins only.
func (o *Order) Deliver(actor Actor, now time.Time) (Event, error) {
	if err := o.begin(actor, TransitionDeliver, "", now); err != nil {
		return Event{}, err
	}
	return o.event(EventOrderDelivered, OrderDelivered{o.Snapshot()}), nil
}

// Cancel cancels a placed or paid order and releases its reservations:
// OrderCancelled, then one InventoryReleased per line in SKU order. The owner or
// an admin may cancel. On error nothing changes.
func (o *Order) Cancel(actor Actor, reason string, stock map[string]*Inventory, now time.Time) ([]Event, error) {
	prev := o.Snapshot()
	if err := o.begin(actor, TransitionCancel, reason, now); err != nil {
		return nil, err
	}
	events := []Event{o.event(EventOrderCancelled, OrderCancelled{OrderSnapshot: o.Snapshot(), Reason: reason, PreviousStatus: prev.Status})}
	return o.applyToStock(prev, events, stock, func(inv *Inventory, l OrderLine) (Event, error) {
		return inv.release(o.s.OrderID, l.Quantity, InventoryReasonCanceled, o.s.UpdatedAt)
	})
}

// SKUs returns the order's SKUs in ascending (lock) order.
func (o *Order) SKUs() []string {
	skus := make([]string, len(o.s.Items))
	for i, l := range o.s.Items {
		skus[i] = l.SKU
	}
	slices.Sort(skus)
	return skus
}

// applyToStock applies one stock change per line in SKU order. It is all or
// nothing: on error the order and every inventory are as they were before
// the command (prev is the order's state before its transition).
func (o *Order) applyToStock(prev OrderSnapshot, events []Event, stock map[string]*Inventory, apply func(*Inventory, OrderLine) (Event, error)) ([]Event, error) {
	lines := slices.Clone(o.s.Items)
	slices.SortFunc(lines, func(a, b OrderLine) int { return strings.Compare(a.SKU, b.SKU) })
	before := make(map[string]InventoryLevels, len(lines))
	for _, l := range lines {
		if inv := stock[l.SKU]; inv != nil {
			before[l.SKU] = inv.s
		}
	}
	rollback := func() {
		o.s = prev
		for sku, lv := range before {
			stock[sku].s = lv
		}
	}
	for _, l := range lines {
		inv := stock[l.SKU]
		if inv == nil {
			rollback()
			return nil, Errorf(CodeConflict, "inventory of %s is missing", l.SKU)
		}
		ev, err := apply(inv, l)
		if err != nil {
			rollback()
			return nil, err
		}
		events = append(events, ev)
	}
	return events, nil
}
