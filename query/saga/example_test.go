package saga_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/shoaldb/shoal/client"
	"github.com/shoaldb/shoal/node"
	"github.com/shoaldb/shoal/query/saga"
)

// startExampleNode starts a one-node shoal cluster in this process (every shard a one-voter
// group) on free loopback ports, with its data in a temporary directory, and returns a client
// dialled to it and a function that closes both and deletes the data. Real programs dial a
// running server instead, e.g. one started with `shoal server`.
func startExampleNode() (*client.Client, func()) {
	dir, err := os.MkdirTemp("", "shoal-example-")
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := node.Start(ctx, node.Config{DataDir: dir, Listen: "127.0.0.1:0", Gossip: "127.0.0.1:0",
		DisableHTTP: true, Name: "example", Shards: 4, Replication: 1})
	if err != nil {
		os.RemoveAll(dir)
		log.Fatal(err)
	}
	c, err := client.Dial(ctx, []string{n.Addr()})
	if err != nil {
		n.Close()
		os.RemoveAll(dir)
		log.Fatal(err)
	}
	return c, func() {
		c.Close()
		n.Close()
		os.RemoveAll(dir)
	}
}

// A two-step transfer whose second step fails: the first is compensated.
// Each step writes to shoal with its idempotency ID as the event ID, so a
// step re-run after a crash is a no-op.
//
// A compensation must undo only what its action did: the coordinator also
// compensates the step that failed, whose action may or may not have taken
// effect, and may still take effect late (an attempt that timed out). So the
// debit's compensation first appends a void under the debit's own ID, to the
// debit's stream: if the debit never landed, the void takes its ID and a late
// debit is answered as a duplicate of it, writing nothing; if the debit did
// land, the void is the duplicate, and the money is given back. A re-run of
// the compensation finds the void (nothing to give back) or the debit (the
// refund, under its own ID, is written once).
//
// An append refused for good (the account's stream tombstoned, an invalid
// event) wrote nothing and would be refused again: the action returns it as
// Permanent, not to be retried. A tombstoned stream takes no append at all, so
// no late debit can land there either: its void has nothing to keep out, and
// the compensation ends, where retrying the void would keep the saga
// compensating for good.
func ExampleCoordinator() {
	c, stop := startExampleNode()
	defer stop()
	ctx := context.Background()

	move := func(stream, typ string) func(context.Context, saga.StepContext) ([]byte, error) {
		return func(ctx context.Context, sc saga.StepContext) ([]byte, error) {
			_, err := c.Append(ctx, stream, client.Any, client.Event{ID: sc.IdempotencyID, Type: typ, Data: sc.Input})
			if errors.Is(err, client.ErrStreamDeleted) || errors.Is(err, client.ErrInvalidArgument) {
				return nil, saga.Permanent(err) // refused, nothing written: retrying changes nothing
			}
			return nil, err
		}
	}
	transfer := &saga.Definition{Name: "transfer", Steps: []saga.Step{
		{
			Name:   "debit",
			Action: move("acct-a", "Debited"),
			Compensate: func(ctx context.Context, sc saga.StepContext) error {
				void := client.Event{ID: sc.ActionID(), Type: "DebitVoided", Data: sc.Input}
				res, err := c.Append(ctx, "acct-a", client.Any, void)
				if errors.Is(err, client.ErrStreamDeleted) {
					return nil // the account is gone for good: no debit can land, nothing can be given back there
				}
				if err != nil || !res.Duplicate {
					return err // voided before it landed: nothing to give back
				}
				// The ID was taken: by the debit, or by this void on an earlier run.
				for ev, err := range c.Read(ctx, "acct-a", client.FromVersion(res.FirstVersion), client.Count(1)) {
					if err != nil || ev.Type != "Debited" {
						return err
					}
				}
				_, err = move("acct-a", "Refunded")(ctx, sc)
				return err
			},
		},
		{
			Name: "credit",
			Action: func(context.Context, saga.StepContext) ([]byte, error) {
				return nil, saga.Permanent(errors.New("account b is closed"))
			},
		},
	}}
	co, err := saga.NewCoordinator(saga.Config{Client: c, Definitions: []*saga.Definition{transfer}})
	if err != nil {
		panic(err)
	}
	st, err := co.Start(ctx, "transfer", "t-1", []byte("100"))
	if err != nil {
		panic(err) // not driven to the end: co.Resume(ctx, "t-1") later (Start again after saga.ErrNotStarted)
	}
	fmt.Printf("%s: step %d failed: %s\n", st.Status, st.FailedStep, st.Failure)
	for ev, err := range c.Read(ctx, "acct-a") {
		if err != nil {
			panic(err)
		}
		fmt.Println(ev.Type, string(ev.Data))
	}
	// Output:
	// aborted: step 1 failed: account b is closed
	// Debited 100
	// Refunded 100
}
