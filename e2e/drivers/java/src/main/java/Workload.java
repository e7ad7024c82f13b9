// The end-to-end workload of cqlmirror with the Java driver 4.x and its default load-balancing
// policy (token-aware): the proxies are the only contact points. It creates a keyspace with
// NetworkTopologyStrategy, writes prepared rows over many partitions and in batches, reads them
// back with paging, and prints one JSON line: what it wrote and read, the nodes the driver
// knows, and any error.
//
// java -cp ... Workload <host:port[,host:port...]> <local-dc> <keyspace> <rows>

import com.datastax.oss.driver.api.core.CqlSession;
import com.datastax.oss.driver.api.core.cql.BatchStatement;
import com.datastax.oss.driver.api.core.cql.BatchStatementBuilder;
import com.datastax.oss.driver.api.core.cql.DefaultBatchType;
import com.datastax.oss.driver.api.core.cql.PreparedStatement;
import com.datastax.oss.driver.api.core.cql.ResultSet;
import com.datastax.oss.driver.api.core.cql.SimpleStatement;
import com.datastax.oss.driver.api.core.metadata.Node;
import java.net.InetSocketAddress;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;

public final class Workload {
    public static void main(String[] args) throws Exception {
        List<InetSocketAddress> contacts = new ArrayList<>();
        for (String hp : args[0].split(",")) {
            int colon = hp.lastIndexOf(':');
            contacts.add(new InetSocketAddress(hp.substring(0, colon), Integer.parseInt(hp.substring(colon + 1))));
        }
        String dc = args[1];
        String ks = args[2];
        int rows = Integer.parseInt(args[3]);
        List<String> errors = new ArrayList<>();
        int written = 0;
        long read = 0;
        List<String> hosts = new ArrayList<>();
        try (CqlSession session = CqlSession.builder()
                .addContactPoints(contacts)
                .withLocalDatacenter(dc)
                .build()) {
            // Schema changes are answered once every node of both clusters has the new schema:
            // give them more than the driver's 2 s default, as for any cluster-wide change.
            Duration ddl = Duration.ofSeconds(20);
            session.execute(SimpleStatement.newInstance(String.format(
                "CREATE KEYSPACE IF NOT EXISTS %s WITH replication = {'class': 'NetworkTopologyStrategy', '%s': 2}", ks, dc)).setTimeout(ddl));
            session.execute(SimpleStatement.newInstance(String.format(
                "CREATE TABLE IF NOT EXISTS %s.kv (p int, c int, v text, PRIMARY KEY (p, c))", ks)).setTimeout(ddl));
            PreparedStatement insert = session.prepare(String.format("INSERT INTO %s.kv (p, c, v) VALUES (?, ?, ?)", ks));
            List<CompletableFuture<?>> pending = new ArrayList<>();
            for (int i = 0; i < rows; i++) {
                CompletionStage<?> f = session.executeAsync(insert.bind(i % 200, i, "java-" + i));
                pending.add(f.toCompletableFuture());
                if (pending.size() >= 64) {
                    CompletableFuture.allOf(pending.toArray(new CompletableFuture[0])).join();
                    pending.clear();
                }
            }
            CompletableFuture.allOf(pending.toArray(new CompletableFuture[0])).join();
            written = rows;
            for (int b = 0; b < 10; b++) {
                BatchStatementBuilder batch = BatchStatement.builder(DefaultBatchType.LOGGED);
                for (int j = 0; j < 10; j++) {
                    int i = rows + b * 10 + j;
                    batch.addStatement(insert.bind(i % 200, i, "java-" + i));
                }
                session.execute(batch.build());
                written += 10;
            }
            // Written at LOCAL_ONE with two replicas: a scan right after may miss a row the
            // second replica has not applied yet. Scan again, a few times, until all are seen.
            for (int attempt = 0; attempt < 10; attempt++) {
                read = 0;
                ResultSet rs = session.execute(SimpleStatement.newInstance(String.format("SELECT p, c, v FROM %s.kv", ks)).setPageSize(100));
                for (var row : rs) {
                    read++;
                }
                if (read == written) {
                    break;
                }
                Thread.sleep(500);
            }
            for (Node node : session.getMetadata().getNodes().values()) {
                hosts.add(node.getEndPoint().resolve().toString().replaceFirst("^.*/", ""));
            }
        } catch (Exception e) {
            errors.add(e.toString());
        }
        StringBuilder out = new StringBuilder();
        out.append("{\"written\": ").append(written).append(", \"read\": ").append(read).append(", \"hosts\": [");
        for (int i = 0; i < hosts.size(); i++) {
            out.append(i > 0 ? ", " : "").append('"').append(hosts.get(i)).append('"');
        }
        out.append("], \"errors\": [");
        for (int i = 0; i < errors.size(); i++) {
            out.append(i > 0 ? ", " : "").append('"').append(errors.get(i).replace("\\", "\\\\").replace("\"", "'")).append('"');
        }
        out.append("]}");
        System.out.println(out);
        System.exit(errors.isEmpty() && read == written ? 0 : 1);
    }
}
