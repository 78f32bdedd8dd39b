/**
 * Errors that need a network other than loopback: unreachable hosts and networks, and sockets the
 * kernel aborts. They are produced for real, in a network namespace created for this file
 * (netns.ts) that holds only what the setup below adds, so no packet can leave the machine; a
 * child process there runs `Tcp.connect` over `NodeTcp.layer` for each scenario and prints what
 * it got (netns-connect.ts). Addresses are from ranges that are never routed on the Internet
 * (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 198.18.0.0/24, 2001:db8::/32). Without
 * namespaces (no privileges, no `unshare`), or without what a scenario needs, tests skip.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import type { Outcome, Scenario } from "./support/netns.js"
import { ipv6Support, runInNetns, socketDestroySupport, support, vethSupport } from "./support/netns.js"

const skipping = (available: boolean, reason: string) => {
  if (!available) console.warn(`test/unreachable.test.ts: skipping: ${reason}`)
  return available
}
const netns = skipping(support.available, support.available ? "" : support.reason)
const ipv6 = netns && skipping(ipv6Support.available, ipv6Support.reason)
const veth = netns && skipping(vethSupport.available, vethSupport.reason)
const destroy = netns && skipping(socketDestroySupport.available, socketDestroySupport.reason)

const setup = [
  "ip link set lo up",
  // Routes that reject: the connect fails at once, in connect(2).
  "ip route add unreachable 198.51.100.0/24",
  "ip route add prohibit 203.0.113.0/24",
  ...(ipv6 ? ["ip -6 route add unreachable 2001:db8:1::/48"] : []),
  // A link with no other host on it: v0 is 198.18.0.1/24, its peer v1 has no address.
  ...(veth ?
    [
      "ip link add v0 type veth peer name v1",
      "ip link set v1 up",
      "ip link set v0 up",
      "ip addr add 198.18.0.1/24 dev v0",
      // Give up on a neighbour after one unanswered ARP request of 100 ms (instead of 3 x 1 s).
      "echo 1 > /proc/sys/net/ipv4/neigh/v0/mcast_solicit",
      "echo 100 > /proc/sys/net/ipv4/neigh/v0/retrans_time_ms",
      // 198.18.0.3 gets a MAC address no one owns: SYNs to it go out and vanish.
      "ip neigh add 198.18.0.3 lladdr 02:00:00:00:00:03 dev v0 nud permanent"
    ] :
    [])
]

// Every scenario runs in the one child, in this order; those whose requirement is missing are left out.
const all: Array<readonly [name: string, runs: boolean, scenario: Scenario]> = [
  ["no route", netns, { kind: "connect", host: "192.0.2.1", port: 80 }],
  ["unreachable route", netns, { kind: "connect", host: "198.51.100.7", port: 8080 }],
  ["prohibit route", netns, { kind: "connect", host: "203.0.113.7", port: 80 }],
  ["IPv6 unreachable route", ipv6, { kind: "connect", host: "2001:db8:1::7", port: 443 }],
  ["IPv6 no route", ipv6, { kind: "connect", host: "2001:db8:2::7", port: 443 }],
  ["silent neighbour", veth, { kind: "connect", host: "198.18.0.2", port: 80 }],
  ["abort connect", veth && destroy, { kind: "abort-connect", host: "198.18.0.3", port: 80 }],
  ["abort read", destroy, { kind: "abort-read" }],
  ["abort write late", destroy, { kind: "abort-write-late" }],
  ["abort write now", destroy, { kind: "abort-write-now" }]
]
const running = all.filter(([, runs]) => runs)

const connectFailure = (tag: string, code: string, host: string, port: number, message: string) => ({
  _tag: tag,
  code,
  syscall: "connect",
  operation: "connect",
  endpoint: { host, port },
  message,
  transient: true
})

describe.skipIf(!netns)("in a network namespace", () => {
  // One namespace and one child for all scenarios: loading the library under tsx takes the child
  // about 2 s, paid once. The child is killed in afterAll at the latest.
  let scope: Scope.CloseableScope | undefined
  let outcomes: ReadonlyArray<Outcome> = []
  beforeAll(async () => {
    scope = Effect.runSync(Scope.make())
    outcomes = await Effect.runPromise(
      Scope.extend(runInNetns({ setup, scenarios: running.map(([, , scenario]) => scenario) }), scope)
    )
  }, 60_000)
  afterAll(async () => {
    if (scope !== undefined) await Effect.runPromise(Scope.close(scope, Exit.void))
  })
  const outcome = (name: string): Outcome => {
    const found = outcomes[running.findIndex(([n]) => n === name)]
    if (found === undefined) throw new Error(`no outcome for "${name}": the child did not run it`)
    return found
  }

  describe("unreachable hosts and networks", () => {
    it("without a route to the address, connect fails with NetworkUnreachable (ENETUNREACH)", () => {
      expect(outcome("no route")).toEqual(
        connectFailure(
          "NetworkUnreachable",
          "ENETUNREACH",
          "192.0.2.1",
          80,
          "connect to 192.0.2.1:80 failed: network unreachable (ENETUNREACH); check this host's network connection and routes"
        )
      )
    })

    it("through a route of type unreachable, connect fails with HostUnreachable (EHOSTUNREACH)", () => {
      expect(outcome("unreachable route")).toEqual(
        connectFailure(
          "HostUnreachable",
          "EHOSTUNREACH",
          "198.51.100.7",
          8080,
          "connect to 198.51.100.7:8080 failed: host unreachable (EHOSTUNREACH); check that the host is up and routable from here"
        )
      )
    })

    it("through a route of type prohibit, connect fails with PermissionDenied (EACCES)", () => {
      expect(outcome("prohibit route")).toEqual({
        ...connectFailure(
          "PermissionDenied",
          "EACCES",
          "203.0.113.7",
          80,
          "connect to 203.0.113.7:80 failed: permission denied (EACCES); check firewall rules and process privileges"
        ),
        transient: false
      })
    })

    it.skipIf(!ipv6)("over IPv6, through a route of type unreachable: HostUnreachable", () => {
      expect(outcome("IPv6 unreachable route")).toEqual(
        connectFailure(
          "HostUnreachable",
          "EHOSTUNREACH",
          "2001:db8:1::7",
          443,
          "connect to [2001:db8:1::7]:443 failed: host unreachable (EHOSTUNREACH); check that the host is up and routable from here"
        )
      )
    })

    it.skipIf(!ipv6)("over IPv6, without a route: NetworkUnreachable", () => {
      expect(outcome("IPv6 no route")).toEqual(
        connectFailure(
          "NetworkUnreachable",
          "ENETUNREACH",
          "2001:db8:2::7",
          443,
          "connect to [2001:db8:2::7]:443 failed: network unreachable (ENETUNREACH); check this host's network connection and routes"
        )
      )
    })

    it.skipIf(!veth)("to a host on the link that never answers ARP, the pending connect fails with HostUnreachable", () => {
      // Unlike the routes above, this failure comes later, when the kernel gives up on the neighbour.
      expect(outcome("silent neighbour")).toEqual(
        connectFailure(
          "HostUnreachable",
          "EHOSTUNREACH",
          "198.18.0.2",
          80,
          "connect to 198.18.0.2:80 failed: host unreachable (EHOSTUNREACH); check that the host is up and routable from here"
        )
      )
    })
  })

  // `ss -K` destroys a socket through the kernel (SOCK_DESTROY), which aborts it with ECONNABORTED.
  describe.skipIf(!destroy)("sockets the kernel aborts (ss -K)", () => {
    const aborted = (operation: "read" | "write", syscall: "read" | "write", outcome: Outcome) => {
      expect(outcome).toMatchObject({
        _tag: "ConnectionAborted",
        code: "ECONNABORTED",
        syscall,
        operation,
        endpoint: { host: "127.0.0.1" },
        transient: true
      })
      if (outcome._tag !== "ConnectionAborted") return
      expect(outcome.message).toBe(
        `${operation} on the connection with 127.0.0.1:${outcome.endpoint?.port} failed: the connection was aborted locally; check the local network and reconnect`
      )
    }

    it.skipIf(!veth)("a connect in SYN-SENT fails with ConnectionAborted", () => {
      expect(outcome("abort connect")).toEqual(
        connectFailure(
          "ConnectionAborted",
          "ECONNABORTED",
          "198.18.0.3",
          80,
          "connect to 198.18.0.3:80 failed: the connection was aborted locally; check the local network and reconnect"
        )
      )
    })

    it("a read on an established connection fails with ConnectionAborted", () => {
      aborted("read", "read", outcome("abort read"))
    })

    it("a write after the connection saw the abort fails with ConnectionAborted", () => {
      // The abort reached the connection through its pending read(2): the write reports that error
      // (syscall "read") under its own operation.
      aborted("write", "read", outcome("abort write late"))
    })

    it("a write whose write(2) meets the aborted socket fails with ConnectionAborted, not a silent success", () => {
      aborted("write", "write", outcome("abort write now"))
    })
  })
})
