package crishim_test

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
)

// bytePumpEnv makes the test binary, started again by a benchmark, a raw
// byte-pump unix socket proxy: "LISTEN=TARGET". It is the floor a relay
// process can reach: one extra unix-socket hop each way, nothing parsed.
const bytePumpEnv = "HOLDFAST_TEST_BYTEPUMP"

func TestMain(m *testing.M) {
	if spec := os.Getenv(bytePumpEnv); spec != "" {
		if err := bytePump(spec); err != nil {
			fmt.Fprintln(os.Stderr, "bytepump:", err)
			os.Exit(1)
		}
		return
	}
	os.Exit(m.Run())
}

func bytePump(spec string) error {
	listen, target, ok := strings.Cut(spec, "=")
	if !ok {
		return fmt.Errorf("%s=%q: want LISTEN=TARGET", bytePumpEnv, spec)
	}
	os.Remove(listen)
	ln, err := net.Listen("unix", listen)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			up, err := net.Dial("unix", target)
			if err != nil {
				return
			}
			defer up.Close()
			done := make(chan struct{}, 2)
			go func() { io.Copy(up, c); done <- struct{}{} }()
			go func() { io.Copy(c, up); done <- struct{}{} }()
			<-done
		}()
	}
}
