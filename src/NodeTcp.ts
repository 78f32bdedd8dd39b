/**
 * The `Tcp` service over `node:net`.
 *
 * @since 0.1.0
 */
import * as Layer from "effect/Layer"
import * as client from "./internal/client.js"
import * as server from "./internal/server.js"
import * as tcpTransport from "./internal/tcpTransport.js"
import { Tcp, type TcpService } from "./Tcp.js"

/**
 * The `Tcp` service implemented with `node:net`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (): TcpService => ({
  connect: client.connectWith(tcpTransport.dialer),
  serve: server.serveWith(tcpTransport.listener)
})

/**
 * Provides `Tcp` over `node:net`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Tcp> = Layer.sync(Tcp, make)
