package main

import (
	"context"
	"errors"
)

// runInstall is a placeholder until its component lands.
func runInstall(ctx context.Context, args []string) error { return errors.New("not implemented yet") }

// runUninstall is a placeholder until its component lands.
func runUninstall(ctx context.Context, args []string) error { return errors.New("not implemented yet") }

// runManifests is a placeholder until its component lands.
func runManifests(ctx context.Context, args []string) error { return errors.New("not implemented yet") }

// runStatus is a placeholder until its component lands.
func runStatus(ctx context.Context, args []string) error { return errors.New("not implemented yet") }
