package postgres

import (
	"context"
	"fmt"
	"time"
)

// swapSetting sets a setting and returns the value it had, read in the same statement:
// the subquery sees the table as it was before the upsert.
const swapSetting = `INSERT INTO settings (name, value, updated_ns) VALUES ($1, $2, $3)
	ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_ns = excluded.updated_ns
	RETURNING COALESCE((SELECT value FROM settings WHERE name = $1), '')`

// SwapSetting sets the setting name to value and returns the value it had before, ""
// when it had none. Replicas use it to compare what their configurations must share.
func (s *Store) SwapSetting(ctx context.Context, name, value string) (string, error) {
	if err := s.usable(ctx, true); err != nil {
		return "", err
	}
	ctx, cancel := s.bounded(ctx)
	defer cancel()
	var old string
	if err := s.pool.QueryRow(ctx, swapSetting, name, value, time.Now().UnixNano()).Scan(&old); err != nil {
		return "", s.errorf(fmt.Sprintf("setting %q", name), err)
	}
	return old, nil
}
