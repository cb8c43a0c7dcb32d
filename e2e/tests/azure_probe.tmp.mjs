import { startUpstreamReceiver, startCluster, startAppServer, ManagementClient, AzureScope, PRIMARY_KEY, SECONDARY_KEY, nextCall, payload, expectStatus, hex } from './azure_helpers.mjs';
const receiver = await startUpstreamReceiver([PRIMARY_KEY, SECONDARY_KEY]);
const cluster = await startCluster({ upstreamTemplate: receiver.template });
const appB = await startAppServer(cluster.nodes[1].url);
const a = new ManagementClient(cluster.nodes[0].url);
const results = {};
for (const kind of ['connection', 'broadcast', 'user', 'connection-second']) {
  let miss = 0;
  for (let i = 0; i < 10; i++) {
    const s = new AzureScope({ services: cluster.nodes, receiver });
    const hub = s.hub(); const user = `u-${hex()}`;
    const c = await s.connect(appB, hub, { user });
    if (kind === 'connection-second') await a.broadcast(hub, payload('warm', []));
    const got = nextCall(c, 'x', { timeoutMs: 2000 });
    const send = { connection: () => a.sendToConnection(hub, c.connectionId, payload('x', [1])), 'connection-second': () => a.sendToConnection(hub, c.connectionId, payload('x', [1])), broadcast: () => a.broadcast(hub, payload('x', [1])), user: () => a.sendToUser(hub, user, payload('x', [1])) }[kind];
    expectStatus(await send(), 202);
    try { await got; } catch { miss++; }
    await s.dispose();
  }
  results[kind] = miss;
}
console.log('first REST call on node A for a fresh hub; misses out of 10:', results);
await appB.close(); await cluster.stop(); await receiver.close();
