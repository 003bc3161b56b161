// Checks real answers of `tally serve` against docs/openapi.json: for each request, the
// operation its method and path name must exist, the answer's status must be listed for it, its
// Content-Type must be one the document gives for that status, its JSON body must match the
// schema (JSON Schema 2020-12, with ajv), and documented headers that are present must match
// theirs. A request that succeeds must also use only documented query parameters and, when it
// has a JSON body, a body the request schema accepts. Every operation called is remembered, so a
// test can require that each one was exercised.
import assert from "node:assert/strict";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

const SCHEMA_ID = "tally-openapi";

export class OpenApiChecker {
  constructor(document) {
    this.doc = document;
    // Component schemas become one schema's $defs, so "#/components/schemas/X" resolves in ajv.
    this.ajv = new Ajv2020({ strict: true, allowUnionTypes: true, allErrors: true });
    addFormats(this.ajv);
    this.ajv.addSchema({ $id: SCHEMA_ID, $defs: this.#rewrite(document.components.schemas) });
    this.validators = new Map();
    this.operations = [];
    for (const [template, item] of Object.entries(document.paths)) {
      const pattern = new RegExp("^" + template.replace(/[.]/g, "\\.").replace(/\{[^}]+\}/g, "[^/]+") + "$");
      for (const [method, operation] of Object.entries(item)) {
        if (["get", "put", "post", "delete", "patch", "head", "options", "trace"].includes(method)) {
          this.operations.push({ method: method.toUpperCase(), template, pattern, operation, item });
        }
      }
    }
    this.seen = new Map();  // "GET /v1/customers/{id}" -> Set of statuses
  }

  #rewrite(schema) {
    return JSON.parse(JSON.stringify(schema).replaceAll('"#/components/schemas/', `"${SCHEMA_ID}#/$defs/`));
  }

  // Follows a "$ref" to a component, keeping the referrer's own description (OpenAPI 3.1).
  #deref(node) {
    if (node && typeof node.$ref === "string" && !node.$ref.startsWith("#/components/schemas/")) {
      const target = node.$ref.slice(2).split("/").reduce((at, part) => at[part.replaceAll("~1", "/").replaceAll("~0", "~")], this.doc);
      assert.ok(target, `unresolved reference ${node.$ref}`);
      return this.#deref(target);
    }
    return node;
  }

  #validate(schema, value, where) {
    const key = JSON.stringify(schema);
    let validate = this.validators.get(key);
    if (!validate) {
      validate = this.ajv.compile(this.#rewrite(schema));
      this.validators.set(key, validate);
    }
    if (!validate(value)) {
      const why = validate.errors.map((e) => `${e.instancePath || "/"} ${e.message} ${JSON.stringify(e.params)}`);
      assert.fail(`${where} does not match the document:\n  ${why.join("\n  ")}\n` +
                  JSON.stringify(value).slice(0, 2000));
    }
  }

  operation(method, path) {
    const bare = path.split("?")[0];
    const lookup = method === "HEAD" ? "GET" : method;
    const found = this.operations.find((o) => o.method === lookup && o.pattern.test(bare));
    assert.ok(found, `${method} ${bare} is not in the document`);
    return found;
  }

  // Checks one exchange. `response` is a fetch Response whose body was read into `text`.
  check({ method, path, requestBody, requestType, response, text }) {
    const op = this.operation(method, path);
    const name = `${op.method} ${op.template}`;
    const where = `${method} ${path} -> ${response.status}`;
    const documented = op.operation.responses[String(response.status)];
    assert.ok(documented, `${where}: the document lists ${Object.keys(op.operation.responses).join(", ")} for ${name}`);
    const answer = this.#deref(documented);
    if (!this.seen.has(name)) this.seen.set(name, new Set());
    this.seen.get(name).add(response.status);

    for (const [header, spec] of Object.entries(answer.headers ?? {})) {
      const h = this.#deref(spec);
      const value = response.headers.get(header);
      if (value === null) {
        assert.ok(!h.required, `${where}: header ${header} is required`);
        continue;
      }
      const v = h.schema?.type === "integer" && /^-?\d+$/.test(value) ? Number(value) : value;
      this.#validate(h.schema, v, `${where}: header ${header}`);
    }

    const media = (response.headers.get("content-type") ?? "").split(";")[0].trim();
    if (answer.content) {
      const content = answer.content[media];
      assert.ok(content, `${where}: Content-Type '${media}' is not among ${Object.keys(answer.content).join(", ")}`);
      if (method !== "HEAD" && media.endsWith("json") && media !== "application/jsonl") {
        this.#validate(content.schema, JSON.parse(text), `${where}: body`);
      }
    }

    if (response.status >= 200 && response.status < 300) {
      const url = new URL(path, "http://tally.invalid");
      const declared = [...(op.item.parameters ?? []), ...(op.operation.parameters ?? [])].map((p) => this.#deref(p));
      for (const param of url.searchParams.keys()) {
        const base = param.replace(/\[.*\]$/, "");
        assert.ok(declared.some((p) => p.in === "query" && p.name === base && (base === param || p.style === "deepObject")),
                  `${where}: query parameter '${param}' is not documented`);
      }
      if (requestBody !== undefined && (requestType ?? "application/json") === "application/json") {
        const schema = op.operation.requestBody?.content?.["application/json"]?.schema;
        assert.ok(schema, `${where}: ${name} documents no JSON body`);
        this.#validate(schema, JSON.parse(requestBody), `${where}: request body`);
      }
    }
  }

  // The operations never answered with a 2xx.
  unexercised() {
    return this.operations
      .map((o) => `${o.method} ${o.template}`)
      .filter((name) => ![...(this.seen.get(name) ?? [])].some((s) => s >= 200 && s < 300));
  }
}
