package main

import (
	"context"
	"errors"
)

// runCRI is a placeholder until its component lands.
func runCRI(ctx context.Context, args []string) error { return errors.New("not implemented yet") }
