/**
 * Extracts every ```ts block of README.md and of the doc comments in src/ into .doc-examples/,
 * so that `npm test` type-checks them (tsconfig.docs.json): an example that does not compile is a
 * failing test.
 */
import * as fs from "node:fs"
import * as path from "node:path"

const root = path.resolve(import.meta.dirname, "..")
const out = path.join(root, ".doc-examples")

const blocks = (text: string): Array<string> =>
  Array.from(text.matchAll(/```ts\n([\s\S]*?)```/g), (match) => match[1]!)

const sources = (dir: string): Array<string> =>
  fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name)
    if (entry.isDirectory()) return entry.name === "internal" ? [] : sources(full)
    return entry.name.endsWith(".ts") ? [full] : []
  })

fs.rmSync(out, { recursive: true, force: true })
fs.mkdirSync(out)
let count = 0
const emit = (from: string, code: string, index: number) => {
  const name = `${path.relative(root, from).replace(/[/.]/g, "_")}_${index}.ts`
  fs.writeFileSync(path.join(out, name), `// from ${path.relative(root, from)}\n${code}\nexport {}\n`)
  count++
}

blocks(fs.readFileSync(path.join(root, "README.md"), "utf8")).forEach((code, i) => emit("README.md", code, i))
for (const file of sources(path.join(root, "src"))) {
  // Doc comment lines start with " * ": strip that to get the code back.
  const comments = fs.readFileSync(file, "utf8").split("\n").map((line) => line.replace(/^\s*\* ?/, "")).join("\n")
  blocks(comments).forEach((code, i) => emit(file, code, i))
}
console.log(`doc examples: ${count} code blocks extracted to .doc-examples/`)
