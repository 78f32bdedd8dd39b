/**
 * A transport made for the tests, to show that the server's policy and the client work over any
 * transport written against the seam, without a change to either. It is TCP on 127.0.0.1 with a
 * handshake of its own, as TLS has one: the server greets each accepted socket with one byte and
 * hands it to the server's policy only once the greeting is written; the client's socket counts
 * as connected ("greeted") only once it has read that byte. Neither greeting byte reaches a
 * handler or a reader.
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as net from "node:net"
import * as Endpoint from "../../src/Endpoint.js"
import * as client from "../../src/internal/client.js"
import * as Options from "../../src/internal/options.js"
import * as server from "../../src/internal/server.js"
import type { Dialer, Listener, Listening } from "../../src/internal/transport.js"
import { Tcp, type TcpService } from "../../src/Tcp.js"
import * as TcpError from "../../src/TcpError.js"

const greeting = 0x2b // "+"

const DialOptions = Schema.Struct({ host: Endpoint.Host, port: Endpoint.Port, ...Options.connectionFields })
const ListenOptions = Schema.Struct({ port: Endpoint.Port, ...Options.serverFields })

/** Opens a TCP socket that emits "greeted" once it has read the server's greeting. */
export const dialer: Dialer<typeof DialOptions.Type> = {
  options: DialOptions,
  endpoint: (options) => Endpoint.make(options.host, options.port),
  dial: (options) => {
    const socket = net.connect({ host: options.host, port: options.port, allowHalfOpen: true })
    socket.once("connect", () => {
      const onEnd = () => socket.destroy(new Error("the server closed the connection before its greeting"))
      const onReadable = () => {
        const first: Buffer | null = socket.read(1)
        if (first === null) return
        socket.off("readable", onReadable)
        socket.off("end", onEnd)
        if (first[0] === greeting) socket.emit("greeted")
        else socket.destroy(new Error(`expected the greeting, got byte ${first[0]}`))
      }
      socket.on("readable", onReadable)
      socket.once("end", onEnd)
    })
    return socket
  },
  connectedEvent: () => "greeted"
}

/** Binds 127.0.0.1 and greets each socket before the server's policy sees it. */
export const listener: Listener<typeof ListenOptions.Type> = {
  options: ListenOptions,
  listen: (options, events) =>
    Effect.async<Listening, TcpError.ListenError>((resume) => {
      const endpoint = Endpoint.make("127.0.0.1", options.port)
      const netServer = net.createServer({ allowHalfOpen: true }, (socket) => {
        events.accepted()
        // Until the policy owns the socket, an error (a client that resets) must not crash the process.
        const ignore = () => {}
        socket.on("error", ignore)
        socket.write(Buffer.of(greeting), (error) => {
          if (error) {
            socket.destroy()
            return
          }
          socket.off("error", ignore)
          events.connection(socket)
        })
      })
      const onError = (error: unknown) => resume(Effect.fail(TcpError.classify(error, "listen", endpoint)))
      netServer.once("error", onError)
      netServer.listen({ host: endpoint.host, port: endpoint.port }, () => {
        netServer.off("error", onError)
        netServer.on("error", events.error)
        const bound = netServer.address() as net.AddressInfo
        resume(Effect.succeed({
          addresses: [Endpoint.make(bound.address, bound.port)],
          close: (onClosed) => netServer.close(() => onClosed())
        }))
      })
    })
}

/** The `Tcp` service over the greeting transport: the core's own connect and server. */
export const layer = Layer.succeed(Tcp, {
  connect: client.connectWith(dialer),
  serve: server.serveWith(listener) as TcpService["serve"]
})
