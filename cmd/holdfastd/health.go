package main

import (
	"context"
	"errors"
)

// runHealth is a placeholder until its component lands.
func runHealth(ctx context.Context, args []string) error { return errors.New("not implemented yet") }
