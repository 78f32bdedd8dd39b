/**
 * @since 0.1.0
 */

import type * as ConnectionModule from "./Connection.js"

/** @since 0.1.0 */
export * as Connection from "./Connection.js"
/**
 * The model itself, beside its namespace: `(connection: Connection) => ...` rather than
 * `Connection.Connection`; `Connection.isConnection` and the other values stay on the namespace.
 *
 * @since 0.1.0
 * @category models
 */
export type Connection = ConnectionModule.Connection
/** @since 0.1.0 */
export * as Endpoint from "./Endpoint.js"
/** @since 0.1.0 */
export * as NodeTcp from "./NodeTcp.js"
/** @since 0.1.0 */
export * as Server from "./Server.js"
/** @since 0.1.0 */
export * as Tcp from "./Tcp.js"
/** @since 0.1.0 */
export * as TcpError from "./TcpError.js"
/** @since 0.1.0 */
export * as Framing from "./Framing.js"
/** @since 0.1.0 */
export * as Message from "./Message.js"
/** @since 0.1.0 */
export * as ConnectionPool from "./ConnectionPool.js"
/** @since 0.1.0 */
export * as Failover from "./Failover.js"
/** @since 0.1.0 */
export * as HealthCheck from "./HealthCheck.js"
/** @since 0.1.0 */
export * as Retry from "./Retry.js"
