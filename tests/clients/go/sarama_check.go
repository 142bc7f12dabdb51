// sarama 1.22 (Debian's golang-github-shopify-sarama-dev) against Sluice:
// metadata, an idempotent acks=all SyncProducer, a partition consumer from
// the oldest offset, and a consumer group of two members that marks and
// commits, then a new member that resumes at the commits.
// Usage: sarama_check BOOTSTRAP
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"sync"
	"time"

	"github.com/Shopify/sarama"
)

const topic = "sarama"
const partitions = 4

func check(ok bool, what string, args ...interface{}) {
	if !ok {
		fmt.Fprintf(os.Stderr, what+"\n", args...)
		os.Exit(1)
	}
}

func config() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V2_2_0_0
	c.ClientID = "sarama-check"
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Idempotent = true
	c.Producer.Retry.Max = 5
	c.Producer.Return.Successes = true
	c.Producer.Partitioner = sarama.NewManualPartitioner
	c.Net.MaxOpenRequests = 1
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	// With a retention set, sarama 1.22 commits with OffsetCommit v2; without
	// one it uses v1, which Sluice (like Kafka 4.0) does not serve.
	c.Consumer.Offsets.Retention = 24 * time.Hour
	c.Consumer.Group.Session.Timeout = 10 * time.Second
	c.Consumer.Group.Heartbeat.Interval = 500 * time.Millisecond
	return c
}

func produce(brokers []string, from, to int) {
	p, err := sarama.NewSyncProducer(brokers, config())
	check(err == nil, "producer: %v", err)
	defer p.Close()
	for i := from; i < to; i++ {
		part, off, err := p.SendMessage(&sarama.ProducerMessage{Topic: topic, Partition: int32(i % partitions),
			Key: sarama.StringEncoder(fmt.Sprintf("k%d", i)), Value: sarama.StringEncoder(fmt.Sprintf("v%d", i))})
		check(err == nil, "send %d: %v", i, err)
		check(part == int32(i%partitions) && off == int64(i/partitions), "send %d went to %d/%d", i, part, off)
	}
}

// handler records what its member reads and marks each record consumed.
type handler struct {
	mu       *sync.Mutex
	seen     map[string]bool
	twice    []string
	assigned map[int32]bool
}

func (h *handler) Setup(s sarama.ConsumerGroupSession) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.assigned = map[int32]bool{}
	for _, p := range s.Claims()[topic] {
		h.assigned[p] = true
	}
	return nil
}

func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h *handler) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for m := range claim.Messages() {
		id := fmt.Sprintf("%d/%d", m.Partition, m.Offset)
		h.mu.Lock()
		if h.seen[id] {
			h.twice = append(h.twice, id)
		}
		h.seen[id] = true
		h.mu.Unlock()
		s.MarkMessage(m, "")
	}
	return nil
}

// group runs `members` members of "sarama-group" until `want` records are read.
func group(brokers []string, members int, seen map[string]bool, want int) []*handler {
	mu := &sync.Mutex{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var handlers []*handler
	var groups []sarama.ConsumerGroup
	for i := 0; i < members; i++ {
		c := config()
		c.Consumer.Offsets.CommitInterval = 100 * time.Millisecond
		g, err := sarama.NewConsumerGroup(brokers, "sarama-group", c)
		check(err == nil, "group: %v", err)
		h := &handler{mu: mu, seen: seen}
		handlers = append(handlers, h)
		groups = append(groups, g)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if err := g.Consume(ctx, []string{topic}, h); err != nil && ctx.Err() == nil {
					fmt.Fprintf(os.Stderr, "consume: %v\n", err)
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n >= want {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Let the last marks be committed (auto-commit every 100 ms), then leave.
	time.Sleep(500 * time.Millisecond)
	cancel()
	wg.Wait()
	for _, g := range groups {
		check(g.Close() == nil, "close")
	}
	mu.Lock()
	defer mu.Unlock()
	check(len(seen) == want, "read %d of %d", len(seen), want)
	return handlers
}

func main() {
	brokers := []string{os.Args[1]}
	if os.Getenv("SARAMA_LOG") != "" {
		sarama.Logger = log.New(os.Stderr, "[sarama] ", log.LstdFlags)
	}
	admin, err := sarama.NewClusterAdmin(brokers, config())
	check(err == nil, "admin: %v", err)
	err = admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1}, false)
	check(err == nil, "create: %v", err)
	meta, err := admin.DescribeTopics([]string{topic})
	check(err == nil && len(meta) == 1 && len(meta[0].Partitions) == partitions, "describe: %v %v", err, meta)

	produce(brokers, 0, 400)

	// A partition consumer from the oldest offset.
	c, err := sarama.NewConsumer(brokers, config())
	check(err == nil, "consumer: %v", err)
	pc, err := c.ConsumePartition(topic, 1, sarama.OffsetOldest)
	check(err == nil, "consume partition: %v", err)
	for want := int64(0); want < 100; want++ {
		select {
		case m := <-pc.Messages():
			check(m.Offset == want && string(m.Value) == fmt.Sprintf("v%d", want*partitions+1),
				"partition 1 offset %d: %d %s", want, m.Offset, m.Value)
		case <-time.After(30 * time.Second):
			check(false, "partition 1 stopped at %d", want)
		}
	}
	pc.Close()
	c.Close()

	seen := map[string]bool{}
	hs := group(brokers, 2, seen, 400)
	total := 0
	for _, h := range hs {
		check(len(h.twice) == 0, "read twice: %v", h.twice)
		total += len(h.assigned)
	}
	check(total == partitions && len(hs[0].assigned) > 0 && len(hs[1].assigned) > 0,
		"two members share: %v %v", hs[0].assigned, hs[1].assigned)
	offsets, err := admin.ListConsumerGroupOffsets("sarama-group", map[string][]int32{topic: {0, 1, 2, 3}})
	check(err == nil, "offsets: %v", err)
	sum := int64(0)
	for _, b := range offsets.Blocks[topic] {
		sum += b.Offset
	}
	check(sum == 400, "committed %d", sum)

	produce(brokers, 400, 440)
	hs = group(brokers, 1, seen, 440)
	check(len(hs[0].twice) == 0, "read twice after resuming: %v", hs[0].twice)
	groups, err := admin.ListConsumerGroups()
	check(err == nil && groups["sarama-group"] != "", "list groups: %v %v", err, groups)
	admin.Close()
	fmt.Println("sarama: admin, produce, partition consumer, group, commit, resume: ok")
}
