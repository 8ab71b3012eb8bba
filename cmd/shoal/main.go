// Command shoal is shoal's server and command-line client. See `shoal --help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first signal cancels ctx; a second then ends the process at once, as signals do by
	// default, whatever the command is waiting for (a server still opening its store on a
	// hung disk, a call that does not watch ctx).
	context.AfterFunc(ctx, stop)
	code := newApp(os.Stdin, os.Stdout, os.Stderr, os.Getenv).run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}
