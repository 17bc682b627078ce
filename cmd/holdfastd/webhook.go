package main

import (
	"context"
	"errors"
)

// runWebhook is a placeholder until its component lands.
func runWebhook(ctx context.Context, args []string) error { return errors.New("not implemented yet") }
