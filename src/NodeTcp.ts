/**
 * The `Tcp` service over `node:net`.
 *
 * @since 0.1.0
 */
import * as Layer from "effect/Layer"
import * as client from "./internal/client.js"
import * as server from "./internal/server.js"
import * as Options from "./internal/options.js"
import * as tcpTransport from "./internal/tcpTransport.js"
import * as unixTransport from "./internal/unixTransport.js"
import type { Handler } from "./Server.js"
import { Tcp, type TcpService } from "./Tcp.js"

/**
 * The `Tcp` service implemented with `node:net`: TCP, and Unix domain sockets for options with a `path`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (): TcpService => {
  const serveTcp = server.serveWith(tcpTransport.listener)
  const serveUnix = server.serveWith(unixTransport.listener)
  return {
    // The dialer takes both: a `path` is a Unix domain socket.
    connect: client.connectWith(tcpTransport.dialer),
    serve: ((options: unknown, handler: Handler<unknown, unknown>) =>
      Options.isUnixOptions(options) ? serveUnix(options, handler) : serveTcp(options, handler)) as TcpService["serve"]
  }
}

/**
 * Provides `Tcp` over `node:net`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Tcp> = Layer.sync(Tcp, make)
