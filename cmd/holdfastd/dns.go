package main

import (
	"context"
	"errors"
)

// runDNS is a placeholder until its component lands.
func runDNS(ctx context.Context, args []string) error { return errors.New("not implemented yet") }
