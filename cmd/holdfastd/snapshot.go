package main

import (
	"context"
	"errors"
)

// runSnapshot is a placeholder until its component lands.
func runSnapshot(ctx context.Context, args []string) error { return errors.New("not implemented yet") }
