package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/jetcqrs/jetcqrs/domain"
)

func notFound(kind, id string) error {
	return domain.Errorf(domain.CodeNotFound, "%s %s not found", kind, id)
}

// CreateProduct adds a product and its empty stock record.
func (s *Store) CreateProduct(ctx context.Context, meta domain.CommandMeta, cmd domain.CreateProduct) (domain.CommandResult, error) {
	if err := domain.AuthorizeCreate(meta.Actor); err != nil {
		return domain.CommandResult{}, err
	}
	if err := domain.CheckVersion(meta.ExpectedVersion, 0); err != nil {
		return domain.CommandResult{}, err
	}
	return s.run(ctx, "create product", meta, func(tx Querier, w *writer) (domain.CommandResult, error) {
		p, ev, err := domain.NewProduct(meta.Actor, cmd, w.now)
		if err != nil {
			return domain.CommandResult{}, err
		}
		snap := p.Snapshot()
		attrs, err := json.Marshal(snap.Attributes)
		if err != nil {
			return domain.CommandResult{}, err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO products (sku, name, description, category, price_cents, attributes, version, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (sku) DO NOTHING`,
			snap.SKU, snap.Name, snap.Description, snap.Category, snap.PriceCents, string(attrs), snap.Version, snap.CreatedAt)
		if err != nil {
			return domain.CommandResult{}, err
		}
		if tag.RowsAffected() == 0 {
			return domain.CommandResult{}, &domain.Error{Code: domain.CodeAlreadyExists, SKU: snap.SKU, Message: "product " + snap.SKU + " already exists"}
		}
		w.write(`INSERT INTO inventory (sku, on_hand, reserved, version, updated_at) VALUES ($1, 0, 0, 0, $2)`, snap.SKU, snap.CreatedAt)
		w.emit(ev)
		return domain.CommandResult{AggregateType: domain.AggregateProduct, AggregateID: snap.SKU, Version: snap.Version, Product: &snap}, nil
	})
}

// UpdateProduct changes a product's catalog data.
func (s *Store) UpdateProduct(ctx context.Context, meta domain.CommandMeta, sku string, upd domain.UpdateProduct) (domain.CommandResult, error) {
	if err := domain.AuthorizeUpdate(meta.Actor); err != nil {
		return domain.CommandResult{}, err
	}
	return s.run(ctx, "update product", meta, func(tx Querier, w *writer) (domain.CommandResult, error) {
		var snap domain.ProductSnapshot
		var attrs []byte
		err := tx.QueryRow(ctx, `SELECT sku, name, description, category, price_cents, attributes, version, created_at, updated_at
			FROM products WHERE sku = $1 FOR NO KEY UPDATE`, sku).
			Scan(&snap.SKU, &snap.Name, &snap.Description, &snap.Category, &snap.PriceCents, &attrs, &snap.Version, &snap.CreatedAt, &snap.UpdatedAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return domain.CommandResult{}, notFound("product", sku)
		}
		if err != nil {
			return domain.CommandResult{}, err
		}
		if err := json.Unmarshal(attrs, &snap.Attributes); err != nil {
			return domain.CommandResult{}, fmt.Errorf("product %s attributes: %w", sku, err)
		}
		if err := domain.CheckVersion(meta.ExpectedVersion, snap.Version); err != nil {
			return domain.CommandResult{}, err
		}
		p := domain.RehydrateProduct(snap)
		ev, err := p.Update(meta.Actor, upd, w.now)
		if err != nil {
			return domain.CommandResult{}, err
		}
		next := p.Snapshot()
		newAttrs, err := json.Marshal(next.Attributes)
		if err != nil {
			return domain.CommandResult{}, err
		}
		w.update(1, `UPDATE products SET name = $2, description = $3, category = $4, price_cents = $5, attributes = $6,
			version = $7, updated_at = $8 WHERE sku = $1 AND version = $9`,
			next.SKU, next.Name, next.Description, next.Category, next.PriceCents, string(newAttrs), next.Version, next.UpdatedAt, snap.Version)
		w.emit(ev)
		return domain.CommandResult{AggregateType: domain.AggregateProduct, AggregateID: next.SKU, Version: next.Version, Product: &next}, nil
	})
}

// AdjustInventory counts stock of one SKU in or out.
func (s *Store) AdjustInventory(ctx context.Context, meta domain.CommandMeta, sku string, delta int64, reason string) (domain.CommandResult, error) {
	if err := domain.AuthorizeAdjust(meta.Actor); err != nil {
		return domain.CommandResult{}, err
	}
	return s.run(ctx, "adjust inventory", meta, func(tx Querier, w *writer) (domain.CommandResult, error) {
		stock, err := lockInventory(ctx, tx, []string{sku})
		if err != nil {
			return domain.CommandResult{}, err
		}
		inv := stock[sku]
		if inv == nil {
			return domain.CommandResult{}, notFound("inventory of sku", sku)
		}
		if err := domain.CheckVersion(meta.ExpectedVersion, inv.Version()); err != nil {
			return domain.CommandResult{}, err
		}
		ev, err := inv.Adjust(meta.Actor, delta, reason, w.now)
		if err != nil {
			return domain.CommandResult{}, err
		}
		w.saveInventory(stock, []string{sku})
		w.emit(ev)
		lv := inv.Levels()
		return domain.CommandResult{AggregateType: domain.AggregateInventory, AggregateID: sku, Version: lv.Version, Inventory: &lv}, nil
	})
}

// PlaceOrder prices an order from the catalog, reserves its stock and stores it.
// Stock rows are locked in SKU order, so concurrent orders cannot deadlock and
// cannot oversell.
func (s *Store) PlaceOrder(ctx context.Context, meta domain.CommandMeta, cmd domain.PlaceOrder) (domain.CommandResult, error) {
	if err := cmd.Authorize(meta.Actor); err != nil {
		return domain.CommandResult{}, err
	}
	if err := domain.CheckVersion(meta.ExpectedVersion, 0); err != nil {
		return domain.CommandResult{}, err
	}
	return s.run(ctx, "place order", meta, func(tx Querier, w *writer) (domain.CommandResult, error) {
		skus := cmd.SKUs()
		rows, err := tx.Query(ctx, `SELECT i.sku, i.on_hand, i.reserved, i.version, p.name, p.category, p.price_cents
			FROM inventory i JOIN products p ON p.sku = i.sku
			WHERE i.sku = ANY($1) ORDER BY i.sku FOR UPDATE OF i`, skus)
		if err != nil {
			return domain.CommandResult{}, err
		}
		catalog := make(map[string]domain.CatalogEntry, len(skus))
		stock := make(map[string]*domain.Inventory, len(skus))
		var lv domain.InventoryLevels
		var ce domain.CatalogEntry
		_, err = pgx.ForEachRow(rows, []any{&lv.SKU, &lv.OnHand, &lv.Reserved, &lv.Version, &ce.Name, &ce.Category, &ce.PriceCents}, func() error {
			ce.SKU = lv.SKU
			catalog[lv.SKU] = ce
			stock[lv.SKU] = domain.RehydrateInventory(lv)
			return nil
		})
		if err != nil {
			return domain.CommandResult{}, err
		}
		id, err := uuid.NewV7()
		if err != nil {
			return domain.CommandResult{}, err
		}
		order, events, err := domain.PlaceNewOrder(id.String(), meta.Actor, cmd, catalog, stock, w.now)
		if err != nil {
			return domain.CommandResult{}, err
		}
		snap := order.Snapshot()
		w.write(`INSERT INTO orders (id, user_id, status, total_cents, payment_method, version, placed_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $7)`,
			id, snap.UserID, string(snap.Status), snap.TotalCents, snap.PaymentMethod, snap.Version, snap.PlacedAt)
		n := len(snap.Items)
		lineNos := make([]int32, n)
		lineSKUs := make([]string, n)
		names := make([]string, n)
		cats := make([]string, n)
		qtys := make([]int64, n)
		prices := make([]int64, n)
		for i, l := range snap.Items {
			lineNos[i], lineSKUs[i], names[i], cats[i], qtys[i], prices[i] = int32(i+1), l.SKU, l.Name, l.Category, l.Quantity, l.PriceCents
		}
		w.write(`INSERT INTO order_items (order_id, line_no, sku, name, category, quantity, price_cents)
			SELECT $1, * FROM unnest($2::int[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[])`,
			id, lineNos, lineSKUs, names, cats, qtys, prices)
		w.saveInventory(stock, skus)
		w.emit(events...)
		return orderResult(snap), nil
	})
}

// TransitionOrder pays, ships, delivers or cancels an order. Ship and cancel
// also move its stock (shipped units leave, cancelled reservations return):
// the stock rows are locked, in SKU order, only when the order may move.
func (s *Store) TransitionOrder(ctx context.Context, meta domain.CommandMeta, orderID string, t domain.OrderTransition, reason string) (domain.CommandResult, error) {
	id, err := uuid.Parse(orderID)
	if err != nil {
		return domain.CommandResult{}, notFound("order", orderID)
	}
	return s.run(ctx, string(t)+" order", meta, func(tx Querier, w *writer) (domain.CommandResult, error) {
		order, err := loadOrder(ctx, tx, id)
		if err != nil {
			return domain.CommandResult{}, err
		}
		skus, err := order.StockToLock(meta.Actor, t)
		if err != nil {
			return domain.CommandResult{}, err
		}
		prevVersion := order.Version()
		if err := domain.CheckVersion(meta.ExpectedVersion, prevVersion); err != nil {
			return domain.CommandResult{}, err
		}
		var stock map[string]*domain.Inventory
		if len(skus) > 0 {
			if stock, err = lockInventory(ctx, tx, skus); err != nil {
				return domain.CommandResult{}, err
			}
		}
		events, err := order.Apply(meta.Actor, t, reason, stock, w.now)
		if err != nil {
			return domain.CommandResult{}, err
		}
		if len(skus) > 0 {
			w.saveInventory(stock, skus)
		}
		snap := order.Snapshot()
		w.update(1, `UPDATE orders SET status = $2, version = $3, updated_at = $4 WHERE id = $1 AND version = $5`,
			id, string(snap.Status), snap.Version, snap.UpdatedAt, prevVersion)
		w.emit(events...)
		return orderResult(snap), nil
	})
}

func orderResult(snap domain.OrderSnapshot) domain.CommandResult {
	return domain.CommandResult{AggregateType: domain.AggregateOrder, AggregateID: snap.OrderID, Version: snap.Version, Order: &snap}
}

// lockInventory locks the stock rows of skus in SKU order and returns those
// that exist.
func lockInventory(ctx context.Context, tx Querier, skus []string) (map[string]*domain.Inventory, error) {
	rows, err := tx.Query(ctx, `SELECT sku, on_hand, reserved, version FROM inventory
		WHERE sku = ANY($1) ORDER BY sku FOR UPDATE`, skus)
	if err != nil {
		return nil, err
	}
	stock := make(map[string]*domain.Inventory, len(skus))
	var lv domain.InventoryLevels
	_, err = pgx.ForEachRow(rows, []any{&lv.SKU, &lv.OnHand, &lv.Reserved, &lv.Version}, func() error {
		stock[lv.SKU] = domain.RehydrateInventory(lv)
		return nil
	})
	return stock, err
}

// saveInventory queues one statement that writes the new levels of skus,
// guarded by their previous versions.
func (w *writer) saveInventory(stock map[string]*domain.Inventory, skus []string) {
	n := len(skus)
	onHand := make([]int64, n)
	reserved := make([]int64, n)
	versions := make([]int64, n)
	for i, sku := range skus {
		lv := stock[sku].Levels()
		onHand[i], reserved[i], versions[i] = lv.OnHand, lv.Reserved, lv.Version
	}
	w.update(int64(n), `UPDATE inventory AS i SET on_hand = u.on_hand, reserved = u.reserved, version = u.version, updated_at = $5
		FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) AS u(sku, on_hand, reserved, version)
		WHERE i.sku = u.sku AND i.version = u.version - 1`,
		skus, onHand, reserved, versions, w.now)
}

func loadOrder(ctx context.Context, tx Querier, id uuid.UUID) (*domain.Order, error) {
	var s domain.OrderSnapshot
	var status string
	err := tx.QueryRow(ctx, `SELECT id::text, user_id, status, total_cents, payment_method, version, placed_at, updated_at
		FROM orders WHERE id = $1 FOR UPDATE`, id).
		Scan(&s.OrderID, &s.UserID, &status, &s.TotalCents, &s.PaymentMethod, &s.Version, &s.PlacedAt, &s.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("order", id.String())
	}
	if err != nil {
		return nil, err
	}
	s.Status = domain.OrderStatus(status)
	rows, err := tx.Query(ctx, `SELECT sku, name, category, quantity, price_cents FROM order_items WHERE order_id = $1 ORDER BY line_no`, id)
	if err != nil {
		return nil, err
	}
	var l domain.OrderLine
	_, err = pgx.ForEachRow(rows, []any{&l.SKU, &l.Name, &l.Category, &l.Quantity, &l.PriceCents}, func() error {
		s.Items = append(s.Items, l)
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.PlacedAt, s.UpdatedAt = s.PlacedAt.UTC(), s.UpdatedAt.UTC()
	return domain.RehydrateOrder(s), nil
}
