/**
 * Tools to test code that uses TCP: `import { FaultProxy } from "effect-tcp/testing"`.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as FaultProxy from "./FaultProxy.js"
