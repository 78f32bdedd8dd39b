/**
 * The `Tcp` service over `node:net`.
 *
 * @since 0.1.0
 */
import * as Layer from "effect/Layer"
import * as client from "./internal/client.js"
import * as server from "./internal/server.js"
import { Tcp, type TcpService } from "./Tcp.js"

/**
 * The `Tcp` service implemented with `node:net`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (): TcpService => ({
  connect: client.connect,
  serve: server.serve
})

/**
 * Provides `Tcp` over `node:net`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Tcp> = Layer.sync(Tcp, make)
