// The end-to-end workload of cqlmirror with gocql (github.com/apache/cassandra-gocql-driver/v2)
// and token awareness over data-center-aware round robin: the proxies are the only contact
// points. It creates a keyspace with NetworkTopologyStrategy, writes prepared rows over many
// partitions and in batches, reads them back with paging, and prints one JSON line: what it
// wrote and read, the nodes the driver knows, and any error.
//
//	go-workload <host:port[,host:port...]> <local-dc> <keyspace> <rows>
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"
)

type summary struct {
	Written int      `json:"written"`
	Read    int      `json:"read"`
	Hosts   []string `json:"hosts"`
	Errors  []string `json:"errors"`
}

func run(contacts []string, dc, ks string, rows int, out *summary) error {
	cluster := gocql.NewCluster(contacts...)
	cluster.PoolConfig.HostSelectionPolicy = gocql.TokenAwareHostPolicy(gocql.DCAwareRoundRobinPolicy(dc))
	cluster.Consistency = gocql.LocalOne
	session, err := cluster.CreateSession()
	if err != nil {
		return err
	}
	defer session.Close()
	if err := session.Query(fmt.Sprintf("CREATE KEYSPACE IF NOT EXISTS %s WITH replication = {'class': 'NetworkTopologyStrategy', '%s': 2}", ks, dc)).Exec(); err != nil {
		return err
	}
	if err := session.Query(fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s.kv (p int, c int, v text, PRIMARY KEY (p, c))", ks)).Exec(); err != nil {
		return err
	}
	insert := fmt.Sprintf("INSERT INTO %s.kv (p, c, v) VALUES (?, ?, ?)", ks)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	work := make(chan int)
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if err := session.Query(insert, i%200, i, fmt.Sprintf("go-%d", i)).Exec(); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < rows; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	if first != nil {
		return first
	}
	out.Written = rows
	for b := 0; b < 10; b++ {
		batch := session.Batch(gocql.LoggedBatch)
		for j := 0; j < 10; j++ {
			i := rows + b*10 + j
			batch.Query(insert, i%200, i, fmt.Sprintf("go-%d", i))
		}
		if err := batch.Exec(); err != nil {
			return err
		}
		out.Written += 10
	}
	// Written at LOCAL_ONE with two replicas: a scan right after may miss a row the second
	// replica has not applied yet. Scan again, a few times, until all are seen.
	for attempt := 0; attempt < 10; attempt++ {
		out.Read = 0
		iter := session.Query(fmt.Sprintf("SELECT p, c, v FROM %s.kv", ks)).PageSize(100).Iter()
		var p, c int
		var v string
		for iter.Scan(&p, &c, &v) {
			out.Read++
		}
		if err := iter.Close(); err != nil {
			return err
		}
		if out.Read == out.Written {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, h := range session.GetHosts() {
		out.Hosts = append(out.Hosts, fmt.Sprintf("%s:%d", h.ConnectAddress(), h.Port()))
	}
	return nil
}

func main() {
	rows, _ := strconv.Atoi(os.Args[4])
	out := summary{Hosts: []string{}, Errors: []string{}}
	if err := run(strings.Split(os.Args[1], ","), os.Args[2], os.Args[3], rows, &out); err != nil {
		out.Errors = append(out.Errors, err.Error())
	}
	line, _ := json.Marshal(out)
	fmt.Println(string(line))
	if len(out.Errors) > 0 || out.Read != out.Written {
		os.Exit(1)
	}
}
