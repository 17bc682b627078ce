package main

import (
	"context"
	"errors"
)

// runIPAM is a placeholder until its component lands.
func runIPAM(ctx context.Context, args []string) error { return errors.New("not implemented yet") }
