// The Terraform under infra/terraform cannot be planned here (no providers), so its correctness is checked by
// parsing every .tf file (@cdktf/hcl2json) and asserting the settings issue 5 requires, and by checking the
// Terraform against the proxy it deploys: environment and SSM names against CONFIG_KEYS (and loadConfig on the
// result), Glue columns against AUDIT_COLUMNS, metric names against the ones src/ registers or (EMF request
// metrics) the constants src/plugins/emf.ts writes them under.
/* eslint-disable no-template-curly-in-string -- Terraform's own "${...}" interpolations, as hcl2json returns them */
import t from 'tap'
import { parse } from '@cdktf/hcl2json'
import { readFile, readdir } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { join, relative, dirname, resolve as resolvePath } from 'node:path'
import { fileURLToPath } from 'node:url'
import { CONFIG_KEYS, ConfigSchema, envNameFromParameter, loadConfig, ssmParameterName } from '../../src/config.ts'
import { AUDIT_COLUMNS, PARTITION_KEYS } from '../../src/audit/schema.ts'
import { GATEWAY_COLUMNS } from '../../src/audit/gateway.ts'
import { Errors } from '../../core/errors.ts'
import { EMF_DIMENSIONS, EMF_DIRECTIVES, EMF_KMS_SIGN_LATENCY, EMF_METRICS } from '../../src/plugins/emf.ts'
import { KMS_SIGNS_IN_FLIGHT } from '../../src/kms/client.ts'
import { loadGatewayConfig } from '../../src/gateway/config.ts'

// hcl2json output: blocks are arrays of objects, expressions are "${...}" strings.
type Hcl = any

const REPO = resolvePath(dirname(fileURLToPath(import.meta.url)), '../..')
const TF_ROOT = join(REPO, 'infra/terraform')
const MODULES = ['network', 'hsm', 'kms_signer', 'service', 'config', 'data_lake', 'monitoring', 'gateway', 'ecs_service', 'efs_spool'] as const
/** The modules the example calls itself; ecs_service and efs_spool are called by service and gateway. */
const EXAMPLE_MODULES = MODULES.filter((m) => m !== 'ecs_service' && m !== 'efs_spool')
const EXAMPLE = 'examples/complete'

interface TfModule {
  readonly dir: string
  readonly files: Map<string, Hcl>
  readonly resources: Record<string, Record<string, Hcl>>
  readonly data: Record<string, Record<string, Hcl>>
  readonly locals: Record<string, Hcl>
  readonly variables: Record<string, Hcl>
  readonly outputs: Record<string, Hcl>
  readonly modules: Record<string, Hcl>
  readonly terraform: Hcl[]
}

async function tfFiles (dir: string): Promise<string[]> {
  const out: string[] = []
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.name.startsWith('.')) continue
    const p = join(dir, e.name)
    if (e.isDirectory()) out.push(...await tfFiles(p))
    else if (e.name.endsWith('.tf')) out.push(p)
  }
  return out.sort()
}

async function loadModules (): Promise<Map<string, TfModule>> {
  const byDir = new Map<string, TfModule>()
  for (const file of await tfFiles(TF_ROOT)) {
    const dir = relative(TF_ROOT, dirname(file))
    let m = byDir.get(dir)
    if (m === undefined) {
      m = { dir, files: new Map(), resources: {}, data: {}, locals: {}, variables: {}, outputs: {}, modules: {}, terraform: [] }
      byDir.set(dir, m)
    }
    const json: Hcl = await parse(file, await readFile(file, 'utf8'))
    m.files.set(relative(join(TF_ROOT, dir), file), json)
    for (const [type, byName] of Object.entries<Hcl>(json.resource ?? {})) {
      for (const [name, blocks] of Object.entries<Hcl>(byName)) (m.resources[type] ??= {})[name] = blocks[0]
    }
    for (const [type, byName] of Object.entries<Hcl>(json.data ?? {})) {
      for (const [name, blocks] of Object.entries<Hcl>(byName)) (m.data[type] ??= {})[name] = blocks[0]
    }
    for (const l of json.locals ?? []) Object.assign(m.locals, l)
    for (const [name, blocks] of Object.entries<Hcl>(json.variable ?? {})) m.variables[name] = blocks[0]
    for (const [name, blocks] of Object.entries<Hcl>(json.output ?? {})) m.outputs[name] = blocks[0]
    for (const [name, blocks] of Object.entries<Hcl>(json.module ?? {})) m.modules[name] = blocks[0]
    m.terraform.push(...(json.terraform ?? []))
  }
  return byDir
}

const all = await loadModules()

function mod (dir: string): TfModule {
  const m = all.get(dir)
  if (m === undefined) throw new Error(`no Terraform in infra/terraform/${dir}`)
  return m
}

function res (m: TfModule, type: string, name: string): Hcl {
  const r = m.resources[type]?.[name]
  if (r === undefined) throw new Error(`${m.dir}: no resource ${type}.${name}`)
  return r
}

function resourcesOf (type: string): Array<{ m: TfModule, name: string, r: Hcl }> {
  const out: Array<{ m: TfModule, name: string, r: Hcl }> = []
  for (const m of all.values()) for (const [name, r] of Object.entries<Hcl>(m.resources[type] ?? {})) out.push({ m, name, r })
  return out
}

/** The first block of a nested block list (`lifecycle`, `health_check`, ...). */
function one (x: Hcl, key: string): Hcl {
  const v = x?.[key]
  if (!Array.isArray(v) || v.length === 0) throw new Error(`no ${key} block`)
  return v[0]
}

/** The inner expression when the whole value is one "${...}", or undefined (a literal or a template). */
function expr (v: unknown): string | undefined {
  if (typeof v !== 'string' || !v.startsWith('${') || !v.endsWith('}')) return undefined
  let depth = 0
  for (let i = 1; i < v.length; i++) {
    if (v[i] === '{') depth++
    else if (v[i] === '}' && --depth === 0) return i === v.length - 1 ? v.slice(2, -1) : undefined
  }
  return undefined
}

/**
 * Evaluates the small expressions the assertions need (references, tostring, floor of a division) against a
 * module's variable defaults, its locals and explicit inputs. Anything else throws: an assertion must not pass on
 * an expression it could not read.
 */
function evaluate (m: TfModule, value: unknown, inputs: Record<string, unknown> = {}): unknown {
  if (typeof value !== 'string') return value
  const e = expr(value)
  if (e === undefined) {
    // A template: interpolate simple references, keep escaped $${...} literal.
    if (!value.includes('${')) return value.replaceAll('$${', '${')
    return value.split('$${').map((part) => part.replace(/\$\{([^}]+)\}/g, (_s, inner: string) => String(evaluate(m, '${' + inner + '}', inputs)))).join('${')
  }
  if (e in inputs) return inputs[e]
  let g: RegExpExecArray | null
  if ((g = /^tostring\((.+)\)$/.exec(e)) !== null) return String(evaluate(m, '${' + g[1] + '}', inputs))
  if ((g = /^join\("([^"]*)", (.+)\)$/.exec(e)) !== null) {
    // join(sep, var.list) or join(sep, [for x in var.list : "template with ${x}"])
    const sep = g[1] as string
    const f = /^\[for (\w+) in (\S+) : "(.*)"\]$/.exec(g[2] as string)
    const list = evaluate(m, '${' + (f === null ? g[2] : f[2]) + '}', inputs)
    if (!Array.isArray(list)) throw new Error(`${m.dir}: ${e}: not a list`)
    return list.map((x: unknown) => (f === null ? String(x) : String(evaluate(m, f[3], { ...inputs, [f[1] as string]: x })))).join(sep)
  }
  if ((g = /^floor\((\S+) \/ (\S+)\)$/.exec(e)) !== null) {
    return Math.floor(Number(evaluate(m, '${' + g[1] + '}', inputs)) / Number(evaluate(m, '${' + g[2] + '}', inputs)))
  }
  if ((g = /^(var|local|each)\.([\w.]+)$/.exec(e)) !== null) {
    const [root, ...path] = (g[2] as string).split('.') as [string, ...string[]]
    let v: unknown
    if (g[1] === 'var') {
      if (root in inputs) v = inputs[root]
      else if (m.variables[root] !== undefined && 'default' in m.variables[root]) v = m.variables[root].default
      else throw new Error(`${m.dir}: var.${root} has no default and no input`)
    } else if (g[1] === 'each') {
      v = inputs[`each.${root}`]
    } else {
      v = evaluate(m, m.locals[root], inputs)
    }
    for (const p of path) v = (v as Record<string, unknown>)[p]
    if (v === undefined) throw new Error(`${m.dir}: ${e} is undefined`)
    return evaluate(m, v, inputs)
  }
  throw new Error(`${m.dir}: cannot evaluate ${e}`)
}

/** Every "${...}" expression string anywhere in a parsed value. */
function expressions (v: unknown, out: string[] = []): string[] {
  if (typeof v === 'string') {
    if (v.includes('${')) out.push(v)
  } else if (Array.isArray(v)) {
    for (const x of v) expressions(x, out)
  } else if (v !== null && typeof v === 'object') {
    for (const x of Object.values(v)) expressions(x, out)
  }
  return out
}

function allStrings (v: unknown, out: string[] = []): string[] {
  if (typeof v === 'string') out.push(v)
  else if (Array.isArray(v)) for (const x of v) allStrings(x, out)
  else if (v !== null && typeof v === 'object') for (const x of Object.values(v)) allStrings(x, out)
  return out
}

/**
 * A policy document's statements, those of its source documents first (source_policy_documents: each a module
 * output that is a policy document there), as the data source merges them. Throws on any other source.
 */
function statementsOf (m: TfModule, doc: Hcl): Hcl[] {
  const sources = ((doc?.source_policy_documents ?? []) as unknown[]).flatMap((v) => {
    const g = /^module\.(\w+)\.(\w+)$/.exec(expr(v) ?? '')
    const call: Hcl = g === null ? undefined : m.modules[g[1] as string]
    if (g === null || call === undefined) throw new Error(`${m.dir}: source document ${String(v)} is not a module output`)
    const target = mod(relative(TF_ROOT, join(TF_ROOT, m.dir, call.source)))
    const d = /^data\.aws_iam_policy_document\.(\w+)\.json$/.exec(expr(target.outputs[g[2] as string]?.value) ?? '')
    if (d === null) throw new Error(`${target.dir}: output ${g[2] as string} is not a policy document`)
    return statementsOf(target, target.data.aws_iam_policy_document?.[d[1] as string])
  })
  return [...sources, ...(doc.statement as Hcl[])]
}

type Signer = 'cloudhsm' | 'kms'
const SIGNERS: readonly Signer[] = ['cloudhsm', 'kms']

const isSetting = (k: string): boolean => (CONFIG_KEYS as string[]).includes(k)

/** A condition on the signer (`var.signer == "kms"`, or a local defined as one) as a predicate; anything else throws. */
function signerCondition (m: TfModule, cond: string): (s: Signer) => boolean {
  let c = cond.trim()
  let negate = false
  if (c.startsWith('!')) {
    negate = true
    c = c.slice(1)
  }
  const l = /^local\.(\w+)$/.exec(c)
  if (l !== null) c = expr(m.locals[l[1] as string]) ?? ''
  const g = /^var\.signer == "(cloudhsm|kms)"$/.exec(c)
  if (g === null) throw new Error(`${m.dir}: not a condition on the signer: ${cond}`)
  return (s) => (s === g[1]) !== negate
}

/** Whether a resource or module call exists with this signer: no count, or a count of `<signer condition> ? 1 : 0`. */
function presentWith (m: TfModule, r: Hcl, signer: Signer): boolean {
  if (r.count === undefined) return true
  const g = /^(.+) \? ([01]) : ([01])$/.exec(expr(r.count) ?? '')
  if (g === null) throw new Error(`${m.dir}: count ${String(r.count)} is not a choice on the signer`)
  return (signerCondition(m, g[1] as string)(signer) ? g[2] : g[3]) === '1'
}

/** The example's config extra_settings names with a signer: `merge({ A = ".." }, { for k, v in { B = ".." } : k => v if local.hsm })`. */
function exampleExtraSettings (signer: Signer): string[] {
  const ex = all.get(EXAMPLE)
  const e = expr(ex?.modules.config.extra_settings) ?? ''
  const g = /^merge\(\s*\{([^}]*)\},\s*\{ for k, v in \{([^}]*)\} : k => v if (\S+) \},?\s*\)$/.exec(e)
  if (ex === undefined || g === null) throw new Error(`the example's extra_settings changed shape: ${e}`)
  const names = (body: string): string[] => [...body.matchAll(/(PIXPROXY_\w+)\s*=/g)].map((m) => m[1] as string)
  return [...names(g[1] as string), ...(signerCondition(ex, g[3] as string)(signer) ? names(g[2] as string) : [])]
}

// ---------------------------------------------------------------------------------------------------------------

t.test('every module has main/variables/outputs/versions and a README listing its inputs and outputs', async (t) => {
  for (const dir of [...MODULES.map((m) => `modules/${m}`), EXAMPLE]) {
    const m = mod(dir)
    for (const f of ['main.tf', 'variables.tf', 'outputs.tf', 'versions.tf']) t.ok(m.files.has(f), `${dir}/${f}`)
    const readmePath = join(TF_ROOT, dir, 'README.md')
    t.ok(existsSync(readmePath), `${dir}/README.md`)
    if (!existsSync(readmePath)) continue
    const readme = await readFile(readmePath, 'utf8')
    if (dir === EXAMPLE) continue
    t.match(readme, /## Inputs/, `${dir}/README.md has an inputs table`)
    t.match(readme, /## Outputs/, `${dir}/README.md has an outputs table`)
    for (const v of Object.keys(m.variables)) t.ok(readme.includes(`\`${v}\``), `${dir}/README.md documents input ${v}`)
    for (const o of Object.keys(m.outputs)) t.ok(readme.includes(`\`${o}\``), `${dir}/README.md documents output ${o}`)
    // Variables live in variables.tf, outputs in outputs.tf.
    t.same(Object.keys(m.files.get('variables.tf')?.variable ?? {}).sort(), Object.keys(m.variables).sort(), `${dir}: every variable is in variables.tf`)
    t.same(Object.keys(m.files.get('outputs.tf')?.output ?? {}).sort(), Object.keys(m.outputs).sort(), `${dir}: every output is in outputs.tf`)
  }
  t.ok(existsSync(join(TF_ROOT, 'README.md')), 'infra/terraform/README.md')
})

t.test('versions pin Terraform and the AWS provider to a bounded range', async (t) => {
  for (const m of all.values()) {
    const tf = m.terraform[0]
    t.ok(tf, `${m.dir}: terraform block`)
    t.match(tf.required_version, /^>= 1\.\d+/, `${m.dir}: required_version`)
    const aws = tf.required_providers?.[0]?.aws
    t.equal(aws?.source, 'hashicorp/aws', `${m.dir}: aws provider source`)
    t.match(aws?.version, /^>= [56]\.\d+, < [67]\.0$/, `${m.dir}: aws provider range has a lower and an upper bound`)
  }
})

t.test('every variable has a type and a description; every output a description', async (t) => {
  let n = 0
  for (const m of all.values()) {
    for (const [name, v] of Object.entries<Hcl>(m.variables)) {
      n++
      t.ok(typeof v.type === 'string' && v.type.length > 0, `${m.dir}: var.${name} has a type`)
      t.ok(typeof v.description === 'string' && v.description.trim().length > 10, `${m.dir}: var.${name} has a description`)
    }
    for (const [name, o] of Object.entries<Hcl>(m.outputs)) {
      t.ok(typeof o.description === 'string' && o.description.trim().length > 5, `${m.dir}: output ${name} has a description`)
    }
  }
  t.ok(n > 50, `${n} variables checked`)
})

const terraformMissing = (spawnSync('terraform', ['version'], { encoding: 'utf8' }).error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT'

t.test('terraform fmt -check -recursive passes', {
  skip: terraformMissing ? 'the terraform binary is not on PATH, so formatting cannot be checked here' : false
}, async (t) => {
  const r = spawnSync('terraform', ['fmt', '-check', '-recursive', '-diff', 'infra/terraform'], { cwd: REPO, encoding: 'utf8' })
  t.equal(r.status, 0, `terraform fmt reports no differences${r.status === 0 ? '' : ':\n' + r.stdout}`)
})

t.test('references resolve: variables, locals, resources, data sources, module outputs', async (t) => {
  const meta = new Set(['source', 'version', 'providers', 'depends_on', 'count', 'for_each'])
  for (const m of all.values()) {
    // moved {} blocks name addresses, not values (an old address no longer exists): their own test checks them.
    const exprs = [...m.files.values()].flatMap((j) => expressions({ ...j, moved: undefined }))
    for (const e of exprs) {
      for (const g of e.matchAll(/(?<![\w.])var\.(\w+)/g)) t.ok(g[1] as string in m.variables, `${m.dir}: var.${g[1]} is declared`)
      for (const g of e.matchAll(/(?<![\w.])local\.(\w+)/g)) t.ok(g[1] as string in m.locals, `${m.dir}: local.${g[1]} is declared`)
      for (const g of e.matchAll(/(?<![\w.])data\.(aws_\w+)\.(\w+)/g)) t.ok(m.data[g[1] as string]?.[g[2] as string], `${m.dir}: data.${g[1]}.${g[2]} exists`)
      for (const g of e.matchAll(/(?<![\w.])(aws_\w+)\.(\w+)/g)) t.ok(m.resources[g[1] as string]?.[g[2] as string], `${m.dir}: ${g[1]}.${g[2]} exists`)
      for (const g of e.matchAll(/(?<![\w.])module\.(\w+)\.(\w+)/g)) {
        const call = m.modules[g[1] as string]
        t.ok(call, `${m.dir}: module.${g[1]} is called`)
        if (call === undefined) continue
        const target = mod(relative(TF_ROOT, join(TF_ROOT, m.dir, call.source)))
        t.ok(g[2] as string in target.outputs, `${m.dir}: module.${g[1]}.${g[2]} is an output of ${target.dir}`)
      }
    }
    // Module calls pass every required input and nothing the module does not declare.
    for (const [name, call] of Object.entries<Hcl>(m.modules)) {
      const target = mod(relative(TF_ROOT, join(TF_ROOT, m.dir, call.source)))
      const args = Object.keys(call).filter((k) => !meta.has(k))
      for (const a of args) t.ok(a in target.variables, `${m.dir}: module.${name} input ${a} is declared by ${target.dir}`)
      for (const [v, decl] of Object.entries<Hcl>(target.variables)) {
        if (!('default' in decl)) t.ok(args.includes(v), `${m.dir}: module.${name} sets required input ${v}`)
      }
    }
  }
})

t.test('the complete example wires all eight modules', async (t) => {
  const ex = mod(EXAMPLE)
  const sources = Object.values<Hcl>(ex.modules).map((c) => c.source).sort()
  t.same(sources, EXAMPLE_MODULES.map((m) => `../../modules/${m}`).sort())
  const service = ex.modules.service
  t.equal(service.hsm_ip_addresses, '${local.hsm ? module.hsm[0].hsm_ip_addresses : []}', 'CLOUDHSM_HSM_IPS come from the hsm module')
  t.equal(service.audit_stream_names, '${module.data_lake.firehose_stream_names}', 'the stream names come from the data lake')
  t.equal(service.config_ssm_path, '${module.config.ssm_path}', 'the SSM path comes from the config module')
  t.equal(ex.modules.hsm.client_security_group_ids[0], '${module.network.task_security_group_id}', 'the tasks are the HSM clients')
})

// ---------------------------------------------------------------------------------------------------------------
// network
// ---------------------------------------------------------------------------------------------------------------

t.test('network: VPC endpoints for Secrets Manager, SSM, Firehose, CloudWatch Logs, ECR and S3', async (t) => {
  const m = mod('modules/network')
  const services = m.variables.interface_endpoint_services.default as string[]
  for (const s of ['secretsmanager', 'ssm', 'kinesis-firehose', 'logs', 'ecr.api', 'ecr.dkr']) t.ok(services.includes(s), `interface endpoint for ${s}`)
  const iface = res(m, 'aws_vpc_endpoint', 'interface')
  t.equal(iface.vpc_endpoint_type, 'Interface')
  t.equal(iface.private_dns_enabled, true, 'private DNS, so the SDKs reach the endpoint by the public name')
  t.equal(iface.for_each, '${local.interface_endpoint_services}')
  t.equal(m.locals.interface_endpoint_services, '${toset(concat(var.interface_endpoint_services, var.create_kms_endpoint ? ["kms"] : []))}')
  t.match(iface.service_name, /^com\.amazonaws\.\$\{data\.aws_region\.current\.name\}\.\$\{each\.value\}$/)
  t.same(iface.security_group_ids, ['${aws_security_group.endpoints.id}'])
  const s3 = res(m, 'aws_vpc_endpoint', 's3')
  t.equal(s3.vpc_endpoint_type, 'Gateway')
  t.match(s3.service_name, /\.s3$/)
  t.equal(m.variables.create_s3_gateway_endpoint.default, true)
  // The endpoints accept HTTPS from the tasks only; the tasks reach them on 443.
  const ingress = res(m, 'aws_vpc_security_group_ingress_rule', 'endpoints_from_tasks')
  t.same([ingress.from_port, ingress.to_port, ingress.referenced_security_group_id], [443, 443, '${aws_security_group.tasks.id}'])
  const egress = res(m, 'aws_vpc_security_group_egress_rule', 'tasks_to_endpoints')
  t.same([egress.from_port, egress.to_port, egress.referenced_security_group_id], [443, 443, '${aws_security_group.endpoints.id}'])
})

t.test('no security group rule opens 0.0.0.0/0; egress to BACEN only to the RSFN destinations', async (t) => {
  for (const type of ['aws_vpc_security_group_egress_rule', 'aws_vpc_security_group_ingress_rule']) {
    for (const { m, name, r } of resourcesOf(type)) {
      t.not(r.cidr_ipv4, '0.0.0.0/0', `${m.dir}: ${type}.${name} is not open to the world`)
      t.not(r.ip_protocol, '-1', `${m.dir}: ${type}.${name} names a protocol`)
      t.ok(r.cidr_ipv4 !== undefined || r.referenced_security_group_id !== undefined || r.prefix_list_id !== undefined, `${m.dir}: ${type}.${name} has a destination`)
    }
  }
  for (const { m, name, r } of resourcesOf('aws_security_group')) {
    t.notOk(r.egress ?? r.ingress, `${m.dir}: aws_security_group.${name} has no inline rules (all rules are explicit resources)`)
  }
  const rsfn = res(mod('modules/network'), 'aws_vpc_security_group_egress_rule', 'tasks_to_rsfn')
  t.equal(rsfn.cidr_ipv4, '${each.value.cidr}', 'RSFN egress comes from var.rsfn_destinations')
  t.match(mod('modules/network').variables.rsfn_destinations.validation[0].condition, /0\.0\.0\.0\/0/, 'the variable refuses 0.0.0.0/0')
})

// ---------------------------------------------------------------------------------------------------------------
// hsm
// ---------------------------------------------------------------------------------------------------------------

t.test('hsm: CloudHSM v2 cluster with one HSM per subnet, at least two Availability Zones', async (t) => {
  const m = mod('modules/hsm')
  const cluster = res(m, 'aws_cloudhsm_v2_cluster', 'this')
  t.equal(cluster.hsm_type, '${var.hsm_type}')
  t.equal(m.variables.hsm_type.default, 'hsm2m.medium')
  t.equal(cluster.subnet_ids, '${var.subnet_ids}')
  const hsm = res(m, 'aws_cloudhsm_v2_hsm', 'this')
  t.equal(hsm.count, '${length(var.subnet_ids)}', 'one HSM per subnet')
  t.equal(hsm.subnet_id, '${var.subnet_ids[count.index]}', 'each HSM in its own subnet')
  t.equal(hsm.cluster_id, '${aws_cloudhsm_v2_cluster.this.cluster_id}')
  const v = m.variables.subnet_ids.validation[0].condition as string
  t.match(v, /length\(var\.subnet_ids\) >= 2/, 'at least two subnets')
  t.match(v, /length\(distinct\(var\.subnet_ids\)\) == length\(var\.subnet_ids\)/, 'distinct subnets')
  const pre = one(one(cluster, 'lifecycle'), 'precondition')
  t.match(pre.condition, /distinct\(\[for s in data\.aws_subnet\.hsm : s\.availability_zone\]\)\) == length\(var\.subnet_ids\)/, 'subnets in distinct AZs')
  for (const [type, name, sg] of [
    ['aws_vpc_security_group_ingress_rule', 'hsm_from_clients', 'security_group_id'],
    ['aws_vpc_security_group_egress_rule', 'clients_to_hsm', 'referenced_security_group_id']
  ] as const) {
    const r = res(m, type, name)
    t.equal(r[sg], '${aws_cloudhsm_v2_cluster.this.security_group_id}', `${name}: the cluster's own security group`)
    t.same([evaluate(m, r.from_port), evaluate(m, r.to_port)], [2223, 2225], `${name}: CloudHSM client ports`)
  }
  t.equal(m.outputs.hsm_ip_addresses.value, '${[for h in aws_cloudhsm_v2_hsm.this : h.ip_address]}', 'the HSM IPs for CLOUDHSM_HSM_IPS')
})

// ---------------------------------------------------------------------------------------------------------------
// service
// ---------------------------------------------------------------------------------------------------------------

const service = mod('modules/service')
/** The ECS service, its CPU scaling and its roles: the module the proxy's service and the gateway both call. */
const ecsService = mod('modules/ecs_service')
const gateway = mod('modules/gateway')
/** The audit spool on EFS: the module the proxy's service and the gateway both call, each for a file system of its own. */
const efsSpool = mod('modules/efs_spool')

/** A module's call of efs_spool. */
function spoolCall (m: TfModule): Hcl {
  const c = m.modules.audit_spool
  if (c?.source !== '../efs_spool') throw new Error(`${m.dir}: no module "audit_spool" { source = "../efs_spool" }`)
  return c
}

/** The efs_spool inputs that name and shape a caller's spool, evaluated in the caller deployed as `name`. */
function spoolInputs (caller: TfModule, name = 'pix-proxy'): Record<string, unknown> {
  const call = spoolCall(caller)
  const at = (v: unknown): unknown => evaluate(caller, v, { name })
  return {
    name: at(call.name),
    access_point_path: at(call.access_point_path),
    uid: at(call.uid),
    gid: at(call.gid),
    security_group: Object.fromEntries(Object.entries<unknown>(call.security_group).map(([k, v]) => [k, at(v)]))
  }
}

/** What a caller's `${module.audit_spool.task_volume.x}` is: the expression efs_spool's task_volume output gives x. */
function taskVolume (v: unknown): unknown {
  const g = /^module\.audit_spool\.task_volume\.(\w+)$/.exec(expr(v) ?? '')
  if (g === null) throw new Error(`${String(v)} is not an attribute of module.audit_spool.task_volume`)
  const value = efsSpool.outputs.task_volume.value[g[1] as string]
  if (value === undefined) throw new Error(`efs_spool: task_volume has no ${g[1] as string}`)
  return value
}

/** A module's call of ecs_service. */
function ecsCall (m: TfModule): Hcl {
  const c = m.modules.ecs_service
  if (c?.source !== '../ecs_service') throw new Error(`${m.dir}: no module "ecs_service" { source = "../ecs_service" }`)
  return c
}

/** A caller's moved {} blocks whose new address is in its module call `name`, as [from, to]. */
function movedInto (caller: TfModule, name: string): Array<[string, string]> {
  return [...caller.files.values()].flatMap((j) => (j.moved ?? []) as Hcl[])
    .map((b): [string, string] => [String(expr(b.from)), String(expr(b.to))])
    .filter(([, to]) => to.startsWith(`module.${name}.`))
}

/** What an ecs_service `${var.x}` is in a caller: the expression the caller passes as x (throws on anything else). */
function through (caller: TfModule, v: unknown): Hcl {
  const g = /^var\.(\w+)$/.exec(expr(v) ?? '')
  if (g === null) throw new Error(`ecs_service: ${String(v)} is not one of its inputs`)
  const a = ecsCall(caller)[g[1] as string]
  if (a === undefined) throw new Error(`${caller.dir}: module.ecs_service gets no ${g[1] as string}`)
  return a
}

t.test('ecs_service: the proxy and the gateway run their services through it, and moved {} blocks keep every resource', async (t) => {
  const own = Object.entries<Record<string, Hcl>>(ecsService.resources).flatMap(([type, byName]) => Object.keys(byName).map((n) => `${type}.${n}`)).sort()
  t.same(own, [
    'aws_appautoscaling_policy.cpu', 'aws_appautoscaling_target.this', 'aws_ecs_service.this',
    'aws_iam_role.execution', 'aws_iam_role.task', 'aws_iam_role_policy.execution', 'aws_iam_role_policy.task'
  ], 'the service, its CPU scaling and the two roles with their policies')
  for (const caller of [service, gateway]) {
    ecsCall(caller)
    // Every resource of the module was the caller's at the same address before: each has its moved block, so a plan
    // moves it in the state instead of destroying and re-creating it (a replaced service or role is an outage).
    const moved = movedInto(caller, 'ecs_service')
    t.same(moved.map(([from]) => from).sort(), own, `${caller.dir}: a moved block for every resource of ecs_service`)
    for (const [from, to] of moved) {
      t.equal(to, `module.ecs_service.${String(from)}`, `${caller.dir}: ${String(from)} moves to the same address in module.ecs_service`)
      const [type, name] = String(from).split('.') as [string, string]
      t.notOk(caller.resources[type]?.[name], `${caller.dir}: ${String(from)} is no longer declared there`)
    }
    t.notOk(caller.modules.ecs_service.count ?? caller.modules.ecs_service.for_each, `${caller.dir}: one instance, no index in the new addresses`)
    // The task role's permissions are the caller's policy document; its task definition runs with the module's roles.
    t.equal(ecsCall(caller).task_policy_json, '${data.aws_iam_policy_document.task.json}', `${caller.dir}: the task role's policy is its document`)
    const td = res(caller, 'aws_ecs_task_definition', 'this')
    t.same([td.execution_role_arn, td.task_role_arn], ['${module.ecs_service.execution_role_arn}', '${module.ecs_service.task_role_arn}'], `${caller.dir}: the task definition runs with those roles`)
    t.equal(ecsCall(caller).task_definition_arn, '${aws_ecs_task_definition.this.arn}', `${caller.dir}: and the service runs that task definition`)
    t.same([ecsCall(caller).target_group_arn, ecsCall(caller).security_group_ids], ['${aws_lb_target_group.this.arn}', [caller === service ? '${var.task_security_group_id}' : '${aws_security_group.tasks.id}']], `${caller.dir}: its target group and its tasks' security group`)
  }
  // The names stay what they were, so nothing is renamed (a rename would replace the resource).
  const svc = res(ecsService, 'aws_ecs_service', 'this')
  const names = (caller: TfModule): unknown[] => [
    evaluate(ecsService, svc.name, { name: evaluate(caller, through(caller, svc.name), { name: 'pix-proxy' }) }),
    evaluate(ecsService, res(ecsService, 'aws_appautoscaling_policy', 'cpu').name, { name: evaluate(caller, through(caller, svc.name), { name: 'pix-proxy' }) }),
    evaluate(ecsService, res(ecsService, 'aws_iam_role', 'execution').name_prefix, { role_name_prefix: evaluate(caller, ecsCall(caller).role_name_prefix, { name: 'pix-proxy' }) }),
    evaluate(ecsService, res(ecsService, 'aws_iam_role', 'task').name_prefix, { role_name_prefix: evaluate(caller, ecsCall(caller).role_name_prefix, { name: 'pix-proxy' }) }),
    ecsCall(caller).execution_policy_name,
    ecsCall(caller).task_policy_name
  ]
  t.same(names(service), ['pix-proxy', 'pix-proxy-cpu', 'pix-proxy-exec-', 'pix-proxy-task-', 'start-tasks', 'run-proxy'], 'the proxy\'s names as before')
  t.same(names(gateway), ['pix-proxy-gateway', 'pix-proxy-gateway-cpu', 'pix-proxy-gw-exec-', 'pix-proxy-gw-task-', 'start-gateway-tasks', 'run-gateway'], 'the gateway\'s names as before')
  // The service is created after its listener and its EFS mount targets (the spool must be mountable).
  t.same(svc.depends_on, ['${aws_iam_role_policy.task}', '${var.service_depends_on}'])
  t.same(ecsCall(service).service_depends_on, ['${aws_lb_listener.this.arn}', '${module.audit_spool.mount_target_ids}'])
  t.same(ecsCall(gateway).service_depends_on, ['${aws_lb_listener.this.arn}', '${module.audit_spool.mount_target_ids}'])
  // Both roles trust ECS tasks of this account only.
  const trust = (ecsService.data.aws_iam_policy_document?.ecs_tasks_assume.statement as Hcl[])[0]
  t.same(trust.principals[0].identifiers, ['ecs-tasks.amazonaws.com'])
  t.same((trust.condition as Hcl[]).map((c) => c.variable).sort(), ['aws:SourceAccount', 'aws:SourceArn'])
  for (const r of ['execution', 'task']) t.equal(res(ecsService, 'aws_iam_role', r).assume_role_policy, '${data.aws_iam_policy_document.ecs_tasks_assume.json}')
})

t.test('efs_spool: the proxy and the gateway keep their spools through it, moved {} blocks keep every resource, nothing is renamed', async (t) => {
  const own = Object.entries<Record<string, Hcl>>(efsSpool.resources).flatMap(([type, byName]) => Object.keys(byName).map((n) => `${type}.${n}`)).sort()
  t.same(own, [
    'aws_efs_access_point.this', 'aws_efs_file_system.this', 'aws_efs_file_system_policy.this', 'aws_efs_mount_target.this',
    'aws_security_group.mount_targets', 'aws_vpc_security_group_egress_rule.clients_to_nfs', 'aws_vpc_security_group_ingress_rule.nfs_from_clients'
  ], 'the file system and its policy, the mount targets, their security group and its NFS rules, the access point')
  // Where each resource was in both callers before the module. A plan moves them in the state: a file system destroyed
  // and re-created would be an empty one, and the rows spooled and not yet shipped would be lost with the old one.
  const before = {
    'aws_efs_access_point.spool': 'aws_efs_access_point.this',
    'aws_efs_file_system.spool': 'aws_efs_file_system.this',
    'aws_efs_file_system_policy.spool': 'aws_efs_file_system_policy.this',
    'aws_efs_mount_target.spool': 'aws_efs_mount_target.this',
    'aws_security_group.efs': 'aws_security_group.mount_targets',
    'aws_vpc_security_group_egress_rule.tasks_to_efs': 'aws_vpc_security_group_egress_rule.clients_to_nfs',
    'aws_vpc_security_group_ingress_rule.efs_from_tasks': 'aws_vpc_security_group_ingress_rule.nfs_from_clients'
  }
  t.same(Object.values(before).sort(), own, 'every resource of efs_spool was somewhere before')
  for (const caller of [service, gateway]) {
    spoolCall(caller)
    const moved = movedInto(caller, 'audit_spool')
    t.same(Object.fromEntries(moved.map(([from, to]) => [from, to.replace(/^module\.audit_spool\./, '')])), before, `${caller.dir}: a moved block from each old address to its new one`)
    t.equal(moved.length, own.length, `${caller.dir}: one moved block a resource`)
    for (const [from] of moved) {
      const [type, name] = from.split('.') as [string, string]
      t.notOk(caller.resources[type]?.[name], `${caller.dir}: ${from} is no longer declared there`)
    }
    t.notOk(spoolCall(caller).count ?? spoolCall(caller).for_each, `${caller.dir}: one instance, no index in the new addresses`)
    const every = [...caller.files.values()].flatMap((j) => (j.moved ?? []) as Hcl[]).length
    t.equal(every, moved.length + movedInto(caller, 'ecs_service').length, `${caller.dir}: every moved block goes into ecs_service or audit_spool`)
  }
  // What replaces a resource when it changes (the creation token, the access point's root, the security group's name
  // prefix and description) stays what it was, and so do the rules' descriptions: the plan after the move is empty.
  const names = (caller: TfModule): unknown[] => {
    const i = spoolInputs(caller)
    const sg = res(efsSpool, 'aws_security_group', 'mount_targets')
    return [
      evaluate(efsSpool, res(efsSpool, 'aws_efs_file_system', 'this').creation_token, i),
      evaluate(efsSpool, one(res(efsSpool, 'aws_efs_access_point', 'this'), 'root_directory').path, i),
      evaluate(efsSpool, sg.name_prefix, i),
      evaluate(efsSpool, sg.description, i),
      evaluate(efsSpool, res(efsSpool, 'aws_vpc_security_group_ingress_rule', 'nfs_from_clients').description, i),
      evaluate(efsSpool, res(efsSpool, 'aws_vpc_security_group_egress_rule', 'clients_to_nfs').description, i)
    ]
  }
  t.same(names(service), [
    'pix-proxy-audit-spool', '/audit-spool', 'pix-proxy-efs-', 'EFS mount targets of the pix-proxy audit spool: NFS from the proxy tasks only',
    'NFS from pix-proxy tasks', 'NFS to the audit spool'
  ], 'the proxy\'s names as before')
  t.same(names(gateway), [
    'pix-proxy-gateway-audit-spool', '/gateway-audit-spool', 'pix-proxy-gw-efs-', 'EFS mount targets of the pix-proxy gateway audit spool: NFS from the gateway tasks only',
    'NFS from the pix-proxy gateway tasks', 'NFS to the gateway audit spool'
  ], 'the gateway\'s names as before')
  // The Name tags too (the security group's is its own input; the file system's and access point's are the name).
  t.equal(res(efsSpool, 'aws_security_group', 'mount_targets').tags, '${merge(var.tags, { Name = var.security_group.name })}')
  for (const r of [res(efsSpool, 'aws_efs_file_system', 'this'), res(efsSpool, 'aws_efs_access_point', 'this')]) t.equal(r.tags, '${merge(var.tags, { Name = var.name })}')
  t.same([evaluate(service, spoolCall(service).security_group.name, { name: 'pix-proxy' }), evaluate(gateway, spoolCall(gateway).security_group.name, { name: 'pix-proxy' })], ['pix-proxy-efs', 'pix-proxy-gateway-efs'])
})

t.test('efs_spool: encrypted, NFS from the tasks only, an access point owned by the container\'s user, TLS and the task role through it only', async (t) => {
  const fs = res(efsSpool, 'aws_efs_file_system', 'this')
  t.same([fs.encrypted, fs.kms_key_id, fs.performance_mode, fs.throughput_mode], [true, '${var.kms_key_arn}', 'generalPurpose', 'elastic'])
  t.same([efsSpool.variables.kms_key_arn.type, efsSpool.variables.kms_key_arn.default], ['${string}', null], 'the given key, or the AWS managed one')
  const mt = res(efsSpool, 'aws_efs_mount_target', 'this')
  t.equal(mt.count, '${length(var.subnet_ids)}', 'a mount target in every subnet')
  t.same([mt.file_system_id, mt.subnet_id, mt.security_groups], ['${aws_efs_file_system.this.id}', '${var.subnet_ids[count.index]}', ['${aws_security_group.mount_targets.id}']])
  t.equal(efsSpool.outputs.mount_target_ids.value, '${aws_efs_mount_target.this[*].id}', 'what the service waits for')
  t.equal(one(res(efsSpool, 'aws_security_group', 'mount_targets'), 'lifecycle').create_before_destroy, true)
  // NFS from the tasks' security group only, and the tasks may reach it.
  const ingress = resourcesOf('aws_vpc_security_group_ingress_rule').filter(({ m }) => m === efsSpool)
  t.equal(ingress.length, 1, 'one way into the mount targets')
  t.same([ingress[0]?.r.security_group_id, ingress[0]?.r.referenced_security_group_id, ingress[0]?.r.ip_protocol, ingress[0]?.r.from_port, ingress[0]?.r.to_port],
    ['${aws_security_group.mount_targets.id}', '${var.client_security_group_id}', 'tcp', 2049, 2049])
  const egress = res(efsSpool, 'aws_vpc_security_group_egress_rule', 'clients_to_nfs')
  t.same([egress.security_group_id, egress.referenced_security_group_id, egress.ip_protocol, egress.from_port, egress.to_port],
    ['${var.client_security_group_id}', '${aws_security_group.mount_targets.id}', 'tcp', 2049, 2049])
  // Every client acts as the container's user, which owns the spool root.
  const ap = res(efsSpool, 'aws_efs_access_point', 'this')
  t.equal(ap.file_system_id, '${aws_efs_file_system.this.id}')
  t.same([one(ap, 'posix_user').uid, one(ap, 'posix_user').gid], ['${var.uid}', '${var.gid}'])
  const ci = one(one(ap, 'root_directory'), 'creation_info')
  t.same([ci.owner_uid, ci.owner_gid, ci.permissions], ['${var.uid}', '${var.gid}', '0750'])
  // The file system policy: TLS only; the task role mounts and writes through the access point only.
  t.equal(res(efsSpool, 'aws_efs_file_system_policy', 'this').policy, '${data.aws_iam_policy_document.file_system.json}')
  const fsPolicy = efsSpool.data.aws_iam_policy_document?.file_system.statement as Hcl[]
  const deny = fsPolicy.find((s) => s.effect === 'Deny')
  t.same([deny?.actions, deny?.resources, deny?.condition[0].variable, deny?.condition[0].values], [['elasticfilesystem:*'], ['${aws_efs_file_system.this.arn}'], 'aws:SecureTransport', ['false']], 'TLS only')
  const allow = fsPolicy.filter((s) => s.effect !== 'Deny')
  t.equal(allow.length, 1, 'one Allow')
  t.same([allow[0]?.actions, allow[0]?.principals[0].identifiers, allow[0]?.condition[0].variable, allow[0]?.condition[0].values],
    [['elasticfilesystem:ClientMount', 'elasticfilesystem:ClientWrite'], ['${var.client_role_arn}'], 'elasticfilesystem:AccessPointArn', ['${aws_efs_access_point.this.arn}']], 'the task role, through the access point')
  // The task role's own statement says the same, and the volume mounts the only way the policy lets a task in.
  t.equal(efsSpool.outputs.client_policy_json.value, '${data.aws_iam_policy_document.client.json}')
  const client = efsSpool.data.aws_iam_policy_document?.client.statement as Hcl[]
  t.equal(client.length, 1, 'one statement')
  t.same(client[0].actions, ['elasticfilesystem:ClientMount', 'elasticfilesystem:ClientWrite'], 'no root access, no other action')
  t.same(client[0].resources, ['${aws_efs_file_system.this.arn}'])
  t.same([client[0].condition[0].variable, client[0].condition[0].values], ['elasticfilesystem:AccessPointArn', ['${aws_efs_access_point.this.arn}']], 'EFS only through the access point')
  t.same(efsSpool.outputs.task_volume.value, { file_system_id: '${aws_efs_file_system.this.id}', access_point_id: '${aws_efs_access_point.this.id}', transit_encryption: 'ENABLED', iam: 'ENABLED' }, 'TLS and IAM authorisation')
  // Each caller: its own tasks' security group and task role, its subnets, VPC and key; the statement in its task policy.
  for (const [caller, tasks] of [[service, '${var.task_security_group_id}'], [gateway, '${aws_security_group.tasks.id}']] as const) {
    const call = spoolCall(caller)
    t.same([call.client_security_group_id, call.client_role_arn, call.subnet_ids, call.vpc_id, call.kms_key_arn, call.tags],
      [tasks, '${module.ecs_service.task_role_arn}', '${var.private_subnet_ids}', '${var.vpc_id}', '${var.efs_kms_key_arn}', '${var.tags}'], `${caller.dir}: its tasks, its task role, its subnets, VPC and key`)
    t.same(caller.data.aws_iam_policy_document?.task.source_policy_documents, ['${module.audit_spool.client_policy_json}'], `${caller.dir}: the task role gets the spool's statement`)
  }
})

const containers: Hcl[] = service.locals.container_definitions
const proxyContainer: Hcl = containers.find((c) => c.name === '${local.proxy_container}')
const signerSettings: Record<'cloudhsm' | 'kms', { environment: Record<string, string>, secrets: Record<string, string> }> = service.locals.signer_settings
/** The container's environment with each signer: the common part and the signer's own (local.container_environment). */
const proxyEnv: Record<string, string> = { ...service.locals.proxy_environment, ...signerSettings.cloudhsm.environment }
const kmsEnv: Record<string, string> = { ...service.locals.proxy_environment, ...signerSettings.kms.environment }
const proxySecrets: Record<string, string> = signerSettings.cloudhsm.secrets

t.test('service: internal NLB, TCP listener passing TLS through, readiness health checks on the operations listener', async (t) => {
  const lb = res(service, 'aws_lb', 'this')
  t.equal(lb.internal, true)
  t.equal(lb.load_balancer_type, 'network')
  t.same(lb.security_groups, ['${aws_security_group.nlb.id}'])
  const listener = res(service, 'aws_lb_listener', 'this')
  t.equal(listener.protocol, 'TCP', 'TCP, not TLS: the proxy terminates TLS and checks client certificates')
  t.notOk(listener.certificate_arn, 'no certificate on the NLB')
  t.equal(one(listener, 'default_action').type, 'forward')
  const tg = res(service, 'aws_lb_target_group', 'this')
  t.equal(tg.protocol, 'TCP')
  t.equal(tg.target_type, 'ip', 'awsvpc tasks register by IP')
  t.equal(tg.port, '${var.container_port}')
  const hc = one(tg, 'health_check')
  t.equal(hc.enabled, true)
  // The callers' port needs a client certificate, which a check does not present; /readyz no longer counts BACEN's
  // reachability, so one BACEN outage does not drain every target.
  t.equal(hc.protocol, 'HTTP', 'an HTTP verdict, not a TCP connect: a task that lost its HSM or audit writer leaves rotation')
  t.equal(hc.path, '/readyz')
  t.equal(hc.matcher, '200')
  t.equal(hc.port, '${tostring(var.ops_port)}', 'on the operations listener')
  t.equal(evaluate(service, '${var.container_port}'), 8443)
  t.equal(evaluate(service, '${var.listener_port}'), 443)
})

t.test('service: Application Auto Scaling owns desired_count; target tracking on CPU and requests per task', async (t) => {
  // The service, its scalable target and the CPU policy are the ecs_service module's; the requests policy the proxy's.
  const svc = res(ecsService, 'aws_ecs_service', 'this')
  t.ok(one(svc, 'lifecycle').ignore_changes.includes('${desired_count}'), 'ignore_changes = [desired_count]')
  const target = res(ecsService, 'aws_appautoscaling_target', 'this')
  t.equal(target.scalable_dimension, 'ecs:service:DesiredCount')
  t.equal(target.service_namespace, 'ecs')
  t.equal(target.resource_id, 'service/${var.cluster_name}/${aws_ecs_service.this.name}')
  t.same([ecsCall(service).cluster_name, ecsCall(service).cluster_arn], ['${aws_ecs_cluster.this.name}', '${aws_ecs_cluster.this.id}'], 'the proxy\'s cluster')
  t.equal(ecsCall(service).autoscaling, '${var.autoscaling}', 'the service module\'s bounds and targets')
  const policies = [...Object.values<Hcl>(service.resources.aws_appautoscaling_policy ?? {}), ...Object.values<Hcl>(ecsService.resources.aws_appautoscaling_policy ?? {})]
  t.equal(policies.length, 2, 'two policies')
  for (const p of policies) t.equal(p.policy_type, 'TargetTrackingScaling')
  t.equal(res(ecsService, 'aws_appautoscaling_policy', 'cpu').resource_id, '${aws_appautoscaling_target.this.resource_id}')
  const requests = res(service, 'aws_appautoscaling_policy', 'requests')
  t.same([requests.resource_id, requests.scalable_dimension, requests.service_namespace],
    ['${module.ecs_service.autoscaling_resource_id}', '${module.ecs_service.autoscaling_scalable_dimension}', '${module.ecs_service.autoscaling_service_namespace}'], 'the requests policy scales the same target')
  t.same([ecsService.outputs.autoscaling_resource_id.value, ecsService.outputs.autoscaling_scalable_dimension.value, ecsService.outputs.autoscaling_service_namespace.value],
    ['${aws_appautoscaling_target.this.resource_id}', '${aws_appautoscaling_target.this.scalable_dimension}', '${aws_appautoscaling_target.this.service_namespace}'])
  const cpu = one(res(ecsService, 'aws_appautoscaling_policy', 'cpu'), 'target_tracking_scaling_policy_configuration')
  t.equal(one(cpu, 'predefined_metric_specification').predefined_metric_type, 'ECSServiceAverageCPUUtilization')
  const req = one(res(service, 'aws_appautoscaling_policy', 'requests'), 'target_tracking_scaling_policy_configuration')
  t.notOk(req.predefined_metric_specification, 'no ALBRequestCountPerTarget: the load balancer is an NLB')
  const queries = one(req, 'customized_metric_specification').metrics as Hcl[]
  const metricOf = (id: string): Hcl => one(one(queries.find((q) => q.id === id), 'metric_stat'), 'metric')
  t.same([metricOf('requests').namespace, metricOf('requests').metric_name], ['${local.metric_namespace}', '${local.emf_metrics.requests}'], 'request count from the proxy\'s EMF records')
  t.equal(evaluate(service, metricOf('requests').metric_name), EMF_METRICS.requests, 'the name the proxy writes')
  t.same(metricOf('requests').dimensions, [{ name: EMF_DIMENSIONS.service, value: '${var.name}' }], 'by service alone, the dimension set the proxy publishes every metric under')
  t.same([metricOf('tasks').namespace, metricOf('tasks').metric_name], ['ECS/ContainerInsights', 'RunningTaskCount'])
  const e = queries.find((q) => q.return_data === true)
  t.equal(e?.expression, 'requests / tasks', 'requests per task is what is tracked')
  t.match(JSON.stringify(res(service, 'aws_ecs_cluster', 'this').setting), /containerInsights/, 'Container Insights on (RunningTaskCount)')
})

t.test('service: Fargate, circuit breaker with rollback, stopTimeout above the drain deadline, NLB deregistration', async (t) => {
  const svc = res(ecsService, 'aws_ecs_service', 'this')
  t.equal(svc.launch_type, 'FARGATE')
  const cb = one(svc, 'deployment_circuit_breaker')
  t.same([cb.enable, cb.rollback], [true, true])
  t.equal(one(svc, 'network_configuration').assign_public_ip, false)
  t.equal(svc.deployment_minimum_healthy_percent, 100, 'deployments never drop below the running count')
  const td = res(service, 'aws_ecs_task_definition', 'this')
  t.same(td.requires_compatibilities, ['FARGATE'])
  t.equal(td.network_mode, 'awsvpc')
  t.equal(td.container_definitions, '${jsonencode(local.container_definitions)}')
  const stop = Number(evaluate(service, proxyContainer.stopTimeout))
  const shutdownMs = Number(evaluate(service, proxyEnv.PIXPROXY_SHUTDOWN_TIMEOUT_MS))
  t.equal(shutdownMs, ConfigSchema.properties.PIXPROXY_SHUTDOWN_TIMEOUT_MS.default, 'the drain deadline is the proxy default (25 s)')
  t.ok(stop * 1000 >= shutdownMs + 5000, `stopTimeout ${stop} s leaves 5 s beyond the ${shutdownMs} ms drain for the audit flush`)
  t.ok(stop <= 120, 'Fargate allows at most 120 s')
  const pre = one(td, 'lifecycle').precondition as Hcl[]
  t.ok(pre.some((p) => /var\.stop_timeout_seconds \* 1000 >= local\.shutdown_timeout_ms \+ 5000/.test(p.condition)), 'the relation is enforced for any input')
  const tg = res(service, 'aws_lb_target_group', 'this')
  const dereg = Number(evaluate(service, tg.deregistration_delay))
  t.ok(dereg >= 5 && dereg <= 120, `deregistration delay ${dereg} s`)
  t.equal(tg.connection_termination, false, 'the proxy closes kept-alive connections itself while draining')
  t.equal(proxyContainer.essential, true)
  for (const c of containers.filter((c) => c !== proxyContainer)) t.equal(c.essential, false, `${c.name}: a sidecar failure does not stop the proxy`)
})

t.test('service: EFS audit spool with transit encryption and an access point owned by the proxy uid', async (t) => {
  const td = res(service, 'aws_ecs_task_definition', 'this')
  const efsVolume = (td.volume as Hcl[]).find((v) => v.efs_volume_configuration !== undefined)
  t.ok(efsVolume, 'an EFS volume')
  // Mounted as the proxy's efs_spool call says: its file system and access point, TLS and IAM authorisation.
  const efs = one(efsVolume, 'efs_volume_configuration')
  t.equal(taskVolume(efs.transit_encryption), 'ENABLED')
  t.equal(taskVolume(efs.file_system_id), '${aws_efs_file_system.this.id}')
  const auth = one(efs, 'authorization_config')
  t.equal(taskVolume(auth.access_point_id), '${aws_efs_access_point.this.id}')
  t.equal(taskVolume(auth.iam), 'ENABLED', 'mounts authorised by the task role')
  const mounts = evaluateMounts(proxyContainer.mountPoints)
  const spoolDir = evaluate(service, proxyEnv.PIXPROXY_AUDIT_SPOOL_DIR)
  t.ok(mounts.some((mp) => mp.sourceVolume === efsVolume.name && mp.containerPath === spoolDir && mp.readOnly === false), `the spool (${String(spoolDir)}) is the EFS mount`)
  t.equal(proxyEnv.PIXPROXY_AUDIT_SPOOL_SHARED, 'true', 'tasks share the access point and claim slots')
  t.equal(proxyContainer.user, '10001:10001')
  t.equal(proxyContainer.readonlyRootFilesystem, true)
  const spool = spoolInputs(service)
  const ap = res(efsSpool, 'aws_efs_access_point', 'this')
  t.same([evaluate(efsSpool, one(ap, 'posix_user').uid, spool), evaluate(efsSpool, one(ap, 'posix_user').gid, spool)], [10001, 10001])
  const ci = one(one(ap, 'root_directory'), 'creation_info')
  t.same([evaluate(efsSpool, ci.owner_uid, spool), evaluate(efsSpool, ci.owner_gid, spool)], [10001, 10001])
  t.equal(res(efsSpool, 'aws_efs_file_system', 'this').encrypted, true)
  t.equal(res(efsSpool, 'aws_efs_mount_target', 'this').count, '${length(var.subnet_ids)}', 'a mount target in every subnet of the spool')
  t.equal(spoolCall(service).subnet_ids, '${var.private_subnet_ids}', 'which are the task subnets')
  // Everything else the read-only container writes is a task-local volume.
  for (const [volume, path] of Object.entries<string>(service.locals.scratch_volumes)) {
    t.ok(mounts.some((mp) => mp.sourceVolume === volume && mp.containerPath === path), `${path} is writable (${volume})`)
  }
  t.ok(Object.values<string>(service.locals.scratch_volumes).includes('/tmp'), '/tmp is writable: the PKCS#11 engine PIN file goes there')
  t.ok(Object.values<string>(service.locals.scratch_volumes).includes('/run/cloudhsm'), '/run/cloudhsm is writable: the entrypoint writes the CloudHSM client configuration there')
  // The image writes nowhere else (Dockerfile header); the spool path is the image's VOLUME.
  const dockerfile = await readFile(join(REPO, 'Dockerfile'), 'utf8').catch(() => null)
  if (dockerfile !== null) {
    t.match(dockerfile, new RegExp(`VOLUME \\[[^\\]]*"${String(spoolDir)}"`), 'the spool mount is the image\'s VOLUME')
    t.match(dockerfile, /USER 10001:10001\s*$/, 'the image runs as 10001')
  }
})

function evaluateMounts (value: Hcl, m: TfModule = service): Array<{ sourceVolume: string, containerPath: string, readOnly: boolean }> {
  // concat([{ sourceVolume = "audit-spool", containerPath = local.spool_dir, ... }], [for v, path in local.scratch_volumes : ...])
  const e = expr(value)
  if (e === undefined) return value
  const out: Array<{ sourceVolume: string, containerPath: string, readOnly: boolean }> = []
  for (const g of e.matchAll(/\{ sourceVolume = "([^"]+)", containerPath = ([\w.]+), readOnly = (true|false) \}/g)) {
    out.push({ sourceVolume: g[1] as string, containerPath: String(evaluate(m, '${' + g[2] + '}')), readOnly: g[3] === 'true' })
  }
  if (/for v, path in local\.scratch_volumes : \{ sourceVolume = v, containerPath = path, readOnly = false \}/.test(e)) {
    for (const [v, path] of Object.entries<string>(m.locals.scratch_volumes)) out.push({ sourceVolume: v, containerPath: path, readOnly: false })
  }
  return out
}

t.test('service: container environment names are proxy settings or the two entrypoint names', async (t) => {
  t.equal(proxyContainer.environment, '${[for k in sort(keys(local.container_environment)) : { name = k, value = local.container_environment[k] }]}', 'the environment is exactly local.container_environment')
  t.equal(service.locals.container_environment, '${merge(local.proxy_environment, local.signer_settings[var.signer].environment)}', 'the common environment and the chosen signer\'s')
  t.equal(service.locals.proxy_secrets, '${local.signer_settings[var.signer].secrets}', 'the chosen signer\'s container secrets')
  t.equal(proxyContainer.secrets, '${[for k in sort(keys(local.proxy_secrets)) : { name = k, valueFrom = local.proxy_secrets[k] }]}', 'the secrets are exactly local.proxy_secrets')
  const names = [...Object.keys(proxyEnv), ...Object.keys(proxySecrets)]
  const allowed = new Set(['CLOUDHSM_HSM_IPS', 'CLOUDHSM_CUSTOMER_CA', 'NODE_OPTIONS'])
  for (const n of names) {
    if (n.startsWith('PIXPROXY_')) t.ok((CONFIG_KEYS as string[]).includes(n), `${n} is a key of CONFIG_KEYS`)
    else t.ok(allowed.has(n), `${n} is an entrypoint variable (CLOUDHSM_HSM_IPS, CLOUDHSM_CUSTOMER_CA, NODE_OPTIONS)`)
  }
  t.ok('CLOUDHSM_HSM_IPS' in proxyEnv, 'CLOUDHSM_HSM_IPS set')
  t.match(proxyEnv.CLOUDHSM_HSM_IPS, /join\(",", var\.hsm_ip_addresses\)/)
  t.same(Object.keys(proxySecrets), ['CLOUDHSM_CUSTOMER_CA'], 'the CloudHSM CA comes from SSM as a container secret')
  t.notOk(Object.keys(proxySecrets).some((k) => k.startsWith('PIXPROXY_')), 'no proxy setting is a container secret: the proxy reads SSM itself')
  t.equal(proxyEnv.PIXPROXY_HSM_MODULE_PATH, '/opt/cloudhsm/lib/libcloudhsm_pkcs11.so')
  t.equal(proxyEnv.PIXPROXY_AUDIT_SINK, 'firehose')
  t.equal(proxyEnv.PIXPROXY_LISTEN_HOST, '0.0.0.0')
  t.equal(evaluate(service, proxyEnv.PIXPROXY_LISTEN_PORT), String(evaluate(service, proxyContainer.portMappings[0].containerPort)), 'listens on the mapped port')
  t.equal(proxyEnv.PIXPROXY_CONFIG_SSM_PATH, '${var.config_ssm_path}')
  for (const c of containers) t.equal(c.logConfiguration.startsWith?.('${local.') ?? false, true, `${c.name}: logs through awslogs`)
  t.equal(service.locals.awslogs.logDriver, 'awslogs')
})

const OPS_PORT = Number(evaluate(service, '${var.ops_port}'))

t.test('service: the operations listener is set in the proxy\'s environment, on the task\'s address, on its own port', async (t) => {
  t.equal(OPS_PORT, 9464, 'ops_port defaults to 9464, the image\'s PIXPROXY_OPS_LISTEN_PORT')
  t.equal(evaluate(service, proxyEnv.PIXPROXY_OPS_LISTEN_PORT), String(OPS_PORT), 'PIXPROXY_OPS_LISTEN_PORT = ops_port')
  t.equal(proxyEnv.PIXPROXY_OPS_LISTEN_PORT, '${tostring(var.ops_port)}')
  t.equal(evaluate(service, proxyEnv.PIXPROXY_OPS_LISTEN_HOST), '0.0.0.0', 'on the task\'s address for the NLB\'s check, pinned in the environment (SSM cannot move it)')
  t.not(OPS_PORT, Number(evaluate(service, '${var.container_port}')), 'apart from the callers\' port by default')
  const v = service.variables.ops_port
  t.equal(v.type, '${number}')
  t.match(v.validation[0].condition, /var\.ops_port >= 1 && var\.ops_port <= 65535/, 'validated as a port')
  const pre = one(res(service, 'aws_ecs_task_definition', 'this'), 'lifecycle').precondition as Hcl[]
  t.ok(pre.some((p) => /^\$\{var\.ops_port != var\.container_port\}$/.test(p.condition)), 'never the callers\' port, for any input (the proxy would refuse it)')
  // Liveness through that listener: the image's checker on a path (docker/healthcheck.mjs GETs it on
  // 127.0.0.1:PIXPROXY_OPS_LISTEN_PORT, which it reads from the container's environment, above).
  const hc = proxyContainer.healthCheck
  t.same(hc.command, ['CMD', 'node', '/app/docker/healthcheck.mjs', '/healthz'], 'the container health check is a GET /healthz')
  t.notOk(JSON.stringify(hc).includes('readyz'), 'liveness, not readiness: a task whose spool is full (a Firehose outage, shared by every task) leaves rotation but is not replaced')
  t.notOk(JSON.stringify(hc).includes('tcp://'), 'a real HTTP verdict, not a TCP connect')
  const checker = await readFile(join(REPO, 'docker/healthcheck.mjs'), 'utf8')
  t.match(checker, /process\.env\.PIXPROXY_OPS_LISTEN_PORT/, 'the checker reads the port the task definition sets')
  // Only the proxy's environment, the agent's scrape target and the precondition know the port.
  const users = [
    ...Object.entries<Hcl>(service.locals).map(([k, v]) => [`local.${k}`, v] as const),
    ...Object.entries<Record<string, Hcl>>(service.resources).flatMap(([type, byName]) => Object.entries<Hcl>(byName).map(([n, r]) => [`${type}.${n}`, r] as const))
  ].filter(([, v]) => JSON.stringify(v).includes('var.ops_port')).map(([k]) => k).sort()
  t.same(users, ['aws_ecs_task_definition.this', 'aws_lb_target_group.this', 'aws_vpc_security_group_egress_rule.nlb_to_tasks_ops', 'aws_vpc_security_group_ingress_rule.tasks_ops_from_nlb', 'local.prometheus_scrape_config', 'local.proxy_environment'])
})

t.test('service: the operations port is reachable from the NLB\'s security group only: two rules, no listener, no port mapping', async (t) => {
  t.same(proxyContainer.portMappings, [{ containerPort: '${var.container_port}', protocol: 'tcp' }], 'only the callers\' port is mapped')
  for (const c of containers.filter((c) => c !== proxyContainer)) t.notOk(c.portMappings, `${c.name}: no port mapping`)
  const covers = (from: unknown, to: unknown): boolean => {
    const [a, b] = [Number(from), Number(to)]
    return Number.isFinite(a) && Number.isFinite(b) && a <= OPS_PORT && OPS_PORT <= b
  }
  const opening: string[] = []
  let checked = 0
  for (const type of ['aws_vpc_security_group_ingress_rule', 'aws_vpc_security_group_egress_rule', 'aws_security_group', 'aws_lb', 'aws_lb_listener']) {
    for (const { m, name, r } of resourcesOf(type)) {
      // The gateway's own operations port (8081) is its module's, asserted with the gateway below.
      if (m.dir === 'modules/gateway') continue
      checked++
      const names = /ops_port|ops_host|9464/.test(JSON.stringify(r))
      const covered = m === service && r.from_port !== undefined && covers(evaluate(service, r.from_port), evaluate(service, r.to_port))
      if (names || covered) opening.push(`${m.dir}: ${type}.${name}`)
    }
  }
  t.ok(checked >= 10, `${checked} security group rules and load balancer resources checked`)
  t.same(opening.sort(), ['modules/service: aws_vpc_security_group_egress_rule.nlb_to_tasks_ops', 'modules/service: aws_vpc_security_group_ingress_rule.tasks_ops_from_nlb'], 'exactly the NLB\'s checks')
  for (const n of ['nlb_to_tasks_ops', 'tasks_ops_from_nlb']) {
    const r = res(service, n.startsWith('nlb') ? 'aws_vpc_security_group_egress_rule' : 'aws_vpc_security_group_ingress_rule', n)
    t.match(JSON.stringify([r.security_group_id, r.referenced_security_group_id]), /aws_security_group\.nlb\.id/, `${n}: between the NLB's security group and the tasks'`)
    t.notOk(r.cidr_ipv4, `${n}: no CIDR`)
  }
  const tg = res(service, 'aws_lb_target_group', 'this')
  t.equal(tg.port, '${var.container_port}', 'traffic goes to the callers\' port')
  const lbOfService = res(ecsService, 'aws_ecs_service', 'this').load_balancer[0]
  t.same([through(service, lbOfService.container_port), through(service, lbOfService.container_name)], ['${var.container_port}', '${local.proxy_container}'], 'the service registers the proxy container\'s callers\' port')
})

t.test('service: the CloudWatch agent sidecar scrapes http://127.0.0.1:<ops_port>/metrics; no scrape identity is left', async (t) => {
  const agent = containers.find((c) => c.name === '${local.agent_container}')
  t.same(containers.map((c) => c.name).sort(), ['${local.agent_container}', '${local.proxy_container}'], 'the proxy and the agent, no init container')
  t.same(Object.keys(service.locals.agent_secrets).sort(), ['CW_CONFIG_CONTENT', 'PROMETHEUS_CONFIG_CONTENT'], 'the agent\'s two configurations come from SSM')
  for (const p of ['cloudwatch_agent_config', 'prometheus_scrape_config']) {
    t.match(res(service, 'aws_ssm_parameter', p).name, /^\$\{var\.infra_ssm_path\}/, `${p} is outside the proxy's settings path`)
  }
  const prom = service.locals.cloudwatch_agent_config.logs.metrics_collected.prometheus
  t.equal(prom.prometheus_config_path, 'env:PROMETHEUS_CONFIG_CONTENT')
  t.equal(prom.emf_processor.metric_namespace, '${local.metric_namespace}')
  const jobs = service.locals.prometheus_scrape_config.scrape_configs as Hcl[]
  t.equal(jobs.length, 1)
  const job = jobs[0]
  t.equal(job.scheme, 'http', 'plain HTTP: the operations listener has no TLS')
  t.notOk('tls_config' in job, 'no client certificate, key or CA')
  t.equal(job.static_configs.length, 1)
  const targets = (job.static_configs[0].targets as string[]).map((x) => String(evaluate(service, x)))
  t.same(targets.map((x) => `http://${x}${String(job.metrics_path)}`), [`http://127.0.0.1:${OPS_PORT}/metrics`], 'the operations listener, on the task\'s shared loopback')
  t.equal(evaluate(service, proxyEnv.PIXPROXY_OPS_LISTEN_HOST), '0.0.0.0', 'the proxy listens on every address of the task, loopback included')
  t.equal(targets[0], `127.0.0.1:${String(evaluate(service, proxyEnv.PIXPROXY_OPS_LISTEN_PORT))}`, 'on the port where the proxy listens')
  t.equal(job.static_configs[0].labels.service, '${var.name}', 'the service dimension')
  t.notOk(agent.dependsOn, 'the agent waits for nothing')
  t.notOk(agent.mountPoints, 'and mounts nothing')
  // The task's volumes: the EFS spool and the proxy's scratch volumes, nothing for a scrape identity.
  const td = res(service, 'aws_ecs_task_definition', 'this')
  t.same((td.volume as Hcl[]).map((v) => v.name), ['audit-spool'])
  t.equal(td.dynamic.volume[0].for_each, '${local.scratch_volumes}')
  // The execution role reads the container secrets there are (all String parameters) and decrypts nothing.
  const exec = ecsService.data.aws_iam_policy_document?.execution.statement as Hcl[]
  t.equal(through(service, exec.find((s) => s.sid === 'ContainerSecrets')?.resources),
    '${concat(values(local.proxy_secrets), [aws_ssm_parameter.cloudwatch_agent_config.arn, aws_ssm_parameter.prometheus_scrape_config.arn])}',
    'the chosen signer\'s container secrets (the CloudHSM CA, or none) and the agent\'s two configurations')
  t.notOk(exec.some((s) => (s.actions as string[]).includes('kms:Decrypt')), 'no SecureString container secret left to decrypt')
  // Nothing of the mTLS scrape identity survives anywhere in the Terraform (modules, example, outputs, READMEs).
  const leftover = /scrape[-_ ]identity|identity_(container|secrets|script)|metrics[-_]scrape|SCRAPE_(CLIENT|SERVER)|scrape_dir|inbound_tls_server_name|inbound-server-ca/i
  for (const m of all.values()) {
    for (const [file, json] of m.files) t.notMatch(JSON.stringify(json), leftover, `${m.dir}/${file}: no scrape identity`)
    t.notMatch(await readFile(join(TF_ROOT, m.dir, 'README.md'), 'utf8'), /metrics[-_]scrape|inbound_tls_server_name|SCRAPE_CLIENT/, `${m.dir}/README.md: no scrape identity`)
  }
  t.notMatch(await readFile(join(TF_ROOT, 'README.md'), 'utf8'), /scrape identity/, 'infra/terraform/README.md')
  // Every scraped metric an alarm uses is declared for CloudWatch.
  const selectors = (prom.emf_processor.metric_declaration as Hcl[]).flatMap((d) => d.metric_selectors as string[])
  for (const name of ['pixproxy_errors_total', 'pixproxy_audit_oldest_unshipped_seconds', 'pixproxy_audit_spool_bytes', 'pixproxy_audit_spool_max_bytes', 'pixproxy_audit_sink_consecutive_failures']) {
    t.ok(selectors.includes(`^${name}$`), `${name} is exported to CloudWatch`)
  }
  const hsmDecl = (prom.emf_processor.metric_declaration as Hcl[]).find((d) => (d.source_labels as string[]).includes('error_class'))
  t.same(hsmDecl?.dimensions, [['service', 'error_class']], 'HSM errors summed under one metric for the alarm')
})

// ---------------------------------------------------------------------------------------------------------------
// config
// ---------------------------------------------------------------------------------------------------------------

const config = mod('modules/config')
const SSM_PATH = config.variables.ssm_path.default as string

const SETTING_NAME_RULE = '${var.ssm_path}${replace(lower(trimprefix(each.key, "PIXPROXY_")), "_", "-")}'

/** The for_each parameters' name expression (SETTING_NAME_RULE) as Terraform evaluates it. */
function terraformSettingName (key: string): string {
  return SSM_PATH + key.replace(/^PIXPROXY_/, '').toLowerCase().replaceAll('_', '-')
}

/** Setting name -> SSM parameter name, for every parameter the config module creates under the settings path. */
function configParameters (signer: Signer = 'cloudhsm'): Map<string, string> {
  const out = new Map<string, string>()
  const setting = res(config, 'aws_ssm_parameter', 'setting')
  if (setting.for_each !== '${local.settings}' || setting.name !== SETTING_NAME_RULE) throw new Error('aws_ssm_parameter.setting changed shape')
  // plain_settings values null for this signer (`local.hsm ? var.x : null`) are filtered out by local.settings.
  const plain = Object.entries<string>(config.locals.plain_settings).filter(([, v]) => {
    const g = /^\$\{(.+) \? (.+) : null\}$/.exec(v)
    return g === null || signerCondition(config, g[1] as string)(signer)
  }).map(([k]) => k)
  for (const k of [...plain, ...Object.keys(config.locals.pem_settings)]) out.set(k, terraformSettingName(k))
  for (const [name, r] of Object.entries<Hcl>(config.resources.aws_ssm_parameter ?? {})) {
    if (name === 'setting' || !(r.name as string).startsWith('${var.ssm_path}') || !presentWith(config, r, signer)) continue
    const pname = String(evaluate(config, r.name))
    const key = envNameFromParameter(pname, SSM_PATH)
    if (key === undefined) throw new Error(`${pname} is under the settings path but names no setting`)
    out.set(key, pname)
  }
  return out
}

t.test('config: every SSM parameter under the settings path is a setting, named by ssmParameterName', async (t) => {
  const setting = res(config, 'aws_ssm_parameter', 'setting')
  t.equal(setting.for_each, '${local.settings}')
  t.equal(setting.name, SETTING_NAME_RULE, 'the name expression is the ssmParameterName rule')
  t.match(config.locals.settings, /local\.plain_settings/)
  t.match(config.locals.settings, /local\.pem_settings/)
  t.match(config.locals.settings, /var\.extra_settings/)
  const params = configParameters()
  t.ok(params.size >= 14, `${params.size} settings in SSM`)
  for (const [key, name] of params) {
    t.ok((CONFIG_KEYS as string[]).includes(key), `${key} is a key of CONFIG_KEYS`)
    t.equal(name, ssmParameterName(key, SSM_PATH), `${name} is ssmParameterName(${key})`)
  }
  // Extra settings are validated as PIXPROXY_* names; the example's are settings.
  t.match(config.variables.extra_settings.validation[0].condition, /\^PIXPROXY_\[A-Z0-9_\]\+\$/)
  const extra = [...exampleExtraSettings('cloudhsm'), ...exampleExtraSettings('kms')]
  t.ok(extra.length > 0, 'the example sets extra settings')
  for (const k of extra) t.ok((CONFIG_KEYS as string[]).includes(k), `example extra setting ${k} is a setting`)
  // Platform parameters never sit under the settings path: the proxy refuses unknown parameters there.
  const infra = config.variables.infra_ssm_path.default as string
  t.notOk(infra.startsWith(SSM_PATH), `${infra} is outside ${SSM_PATH}`)
  t.match(one(one(setting, 'lifecycle'), 'precondition').condition, /!startswith\(var\.infra_ssm_path, var\.ssm_path\)/, 'enforced for any input')
  for (const m of all.values()) {
    for (const [name, r] of Object.entries<Hcl>(m.resources.aws_ssm_parameter ?? {})) {
      const underSettings = (r.name as string).startsWith('${var.ssm_path}')
      const underInfra = (r.name as string).startsWith('${var.infra_ssm_path}')
      t.ok(underSettings !== underInfra, `${m.dir}: aws_ssm_parameter.${name} is under exactly one of the two paths`)
      t.ok(!underSettings || m === config, `${m.dir}: only the config module writes settings`)
    }
  }
  // PEM bundles can exceed a standard parameter's 4 KB.
  t.ok((config.locals.settings as string).includes('local.pem_settings : k => { value = v, tier = "Intelligent-Tiering" }'), 'PEM settings may grow to 8 KB')
})

t.test('config: environment + SSM cover every setting production needs, and loadConfig accepts the result', async (t) => {
  const params = configParameters()
  const env = new Set(Object.keys(proxyEnv).filter((k) => k.startsWith('PIXPROXY_')))
  const ssm = new Set(params.keys())
  for (const k of env) t.notOk(ssm.has(k), `${k} is set in one place only (the environment would shadow SSM)`)
  for (const k of exampleExtraSettings('cloudhsm')) t.notOk(env.has(k), `example extra setting ${k} is not shadowed by the environment`)

  const schema = ConfigSchema as unknown as { required?: string[], properties: Record<string, { default?: unknown }> }
  const requiredNoDefault = CONFIG_KEYS.filter((k) => (schema.required ?? []).includes(k) && schema.properties[k]?.default === undefined)
  t.ok(requiredNoDefault.includes('PIXPROXY_ISPB') && requiredNoDefault.includes('PIXPROXY_SIGNING_CERT_FILE'), 'the schema\'s required settings are derived, not listed')
  const production = [
    ...requiredNoDefault,
    // Keys in the HSM, PIN from Secrets Manager, inbound mTLS, audit to Firehose on the shared EFS spool.
    'PIXPROXY_HSM_MODULE_PATH', 'PIXPROXY_HSM_TOKEN_LABEL', 'PIXPROXY_SIGNING_KEY_LABEL', 'PIXPROXY_TLS_KEY_LABEL',
    'PIXPROXY_HSM_PIN_SECRET_ID', 'PIXPROXY_INBOUND_TLS_CERT_FILE', 'PIXPROXY_INBOUND_TLS_KEY_FILE',
    'PIXPROXY_INBOUND_CLIENT_CA_FILE', 'PIXPROXY_INBOUND_CLIENT_ALLOWLIST', 'PIXPROXY_AUDIT_SINK', 'PIXPROXY_AUDIT_SPOOL_DIR', 'PIXPROXY_AUDIT_SPOOL_SHARED',
    'PIXPROXY_CONFIG_SSM_PATH', 'PIXPROXY_LISTEN_HOST', 'PIXPROXY_LISTEN_PORT'
  ]
  for (const k of production) t.ok(env.has(k) || ssm.has(k), `${k} is set (${env.has(k) ? 'environment' : ssm.has(k) ? 'SSM' : 'nowhere'})`)
  for (const k of ['PIXPROXY_SIGNING_KEY_FILE', 'PIXPROXY_TLS_KEY_FILE', 'PIXPROXY_HSM_PIN_FILE']) t.notOk(env.has(k) || ssm.has(k), `${k} is not used in AWS (keys stay in the HSM, the PIN in Secrets Manager)`)

  // What a task would load: the environment evaluated with the example's wiring, SSM with representative values.
  const inputs = { config_ssm_path: SSM_PATH, audit_stream_names: { spi: 'pix-proxy-audit-spi', dict: 'pix-proxy-audit-dict' }, name: 'pix-proxy', 'local.metric_namespace': 'PixProxy/pix-proxy' }
  const source: Record<string, string> = {}
  for (const k of env) source[k] = String(evaluate(service, proxyEnv[k], inputs))
  const pem = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n'
  const samples: Record<string, string> = {
    PIXPROXY_ISPB: '12345678',
    PIXPROXY_DICT_URL: 'https://dict-h.pi.rsfn.net.br:16522',
    PIXPROXY_SPI_URL: 'https://icom-h.pi.rsfn.net.br:16522',
    PIXPROXY_HSM_TOKEN_LABEL: 'hsm1',
    PIXPROXY_SIGNING_KEY_LABEL: 'pix-sign',
    PIXPROXY_TLS_KEY_LABEL: 'pix-tls',
    PIXPROXY_HSM_PIN_SECRET_ID: 'arn:aws:secretsmanager:sa-east-1:111122223333:secret:pix-proxy/hsm-pin-AbCdEf',
    PIXPROXY_INBOUND_CLIENT_ALLOWLIST: 'AA:'.repeat(31) + 'AA'
  }
  for (const k of ssm) {
    const v = k.endsWith('_FILE') ? pem : samples[k]
    if (v === undefined) {
      t.fail(`no sample value for ${k}`)
      continue
    }
    source[k] = v
  }
  const c = loadConfig(source)
  t.equal(c.hsm?.modulePath, '/opt/cloudhsm/lib/libcloudhsm_pkcs11.so')
  t.equal(c.hsm?.pinSecretId, source.PIXPROXY_HSM_PIN_SECRET_ID)
  t.same([c.signing.keyLabel, c.tls.keyLabel, c.signing.keyFile, c.tls.keyFile], ['pix-sign', 'pix-tls', null, null], 'both keys in the HSM')
  t.same(c.listen, { host: '0.0.0.0', port: 8443 })
  t.same(c.ops, { host: '0.0.0.0', port: 9464 }, 'the operations listener, on the task\'s address (for the NLB\'s readiness check)')
  t.ok(c.inbound.tls !== null && c.inbound.clientCaFile !== null, 'inbound mTLS')
  t.equal(c.unauthenticatedCallers, false, 'every caller authenticated: a client CA and an allowlist')
  t.notOk(env.has('PIXPROXY_ALLOW_UNAUTHENTICATED_CALLERS') || ssm.has('PIXPROXY_ALLOW_UNAUTHENTICATED_CALLERS'), 'no opt-out in AWS')
  const allow = mod('modules/config').variables.inbound_client_allowlist
  t.equal(allow.default, undefined, 'the allowlist has no default')
  t.ok(allow.validation.some((v: { condition: string }) => /length\(var\.inbound_client_allowlist\) > 0/.test(v.condition)), 'and refuses an empty one')
  t.same([c.audit.sink, c.audit.spoolShared, c.audit.spoolDir], ['firehose', true, '/var/spool/pix-proxy'])
  t.same(c.audit.firehoseStreams, { spi: 'pix-proxy-audit-spi', dict: 'pix-proxy-audit-dict' })
  t.equal(c.shutdownTimeoutMs, 25_000)
  t.same(c.emf, { namespace: 'PixProxy/pix-proxy', service: 'pix-proxy' }, 'EMF request metrics on, in the service\'s namespace, dimension service = the ECS service name')
})

t.test('config: the PIN and private keys never pass through Terraform state', async (t) => {
  t.equal(resourcesOf('aws_secretsmanager_secret_version').length, 0, 'no secret version: the PIN is set with put-secret-value')
  const secret = res(config, 'aws_secretsmanager_secret', 'hsm_pin')
  t.equal(secret.count, '${local.hsm ? 1 : 0}', 'the PIN secret exists with signer = "cloudhsm" only')
  t.equal(secret.kms_key_id, '${aws_kms_key.config.arn}')
  t.equal(res(config, 'aws_ssm_parameter', 'hsm_pin_secret_id').value, '${aws_secretsmanager_secret.hsm_pin[0].arn}', 'PIXPROXY_HSM_PIN_SECRET_ID names the secret')
  const tlsKey = res(config, 'aws_secretsmanager_secret', 'tls_key')
  t.same([tlsKey.count, tlsKey.kms_key_id], ['${local.hsm ? 0 : 1}', '${aws_kms_key.config.arn}'], 'the TLS client key secret (signer = "kms"), encrypted with the config key')
  t.equal(res(config, 'aws_ssm_parameter', 'tls_key_secret_id').value, '${aws_secretsmanager_secret.tls_key[0].arn}', 'PIXPROXY_TLS_KEY_SECRET_ID names the secret')
  for (const name of ['inbound_tls_key']) {
    const p = res(config, 'aws_ssm_parameter', name)
    t.equal(p.type, 'SecureString', `${name} is a SecureString`)
    t.equal(p.key_id, '${aws_kms_key.config.arn}', `${name} is encrypted with the config key`)
    t.equal(p.value, '${local.placeholder}', `${name} holds a placeholder in Terraform`)
    t.ok(one(p, 'lifecycle').ignore_changes.includes('${value}'), `${name}: the real value written later is not reverted`)
  }
  t.notOk((config.locals.placeholder as string).startsWith('-----BEGIN'), 'the placeholder is not PEM: the proxy fails at start-up until the key is written')
  t.equal(res(config, 'aws_kms_key', 'config').enable_key_rotation, true)
  for (const { m, name, r } of resourcesOf('aws_ssm_parameter')) {
    if (r.type === 'SecureString') t.ok(one(r, 'lifecycle').ignore_changes?.includes('${value}'), `${m.dir}: SecureString ${name} is written outside Terraform`)
  }
})

// ---------------------------------------------------------------------------------------------------------------
// data lake
// ---------------------------------------------------------------------------------------------------------------

const lake = mod('modules/data_lake')
const SYSTEMS = lake.locals.systems as string[]

t.test('data lake: bucket with SSE-KMS, versioning, lifecycle, public access block, TLS only', async (t) => {
  const sse = one(one(res(lake, 'aws_s3_bucket_server_side_encryption_configuration', 'audit'), 'rule'), 'apply_server_side_encryption_by_default')
  t.equal(sse.sse_algorithm, 'aws:kms')
  t.equal(sse.kms_master_key_id, '${aws_kms_key.audit.arn}')
  t.equal(res(lake, 'aws_kms_key', 'audit').enable_key_rotation, true)
  t.equal(one(res(lake, 'aws_s3_bucket_versioning', 'audit'), 'versioning_configuration').status, 'Enabled')
  const pab = res(lake, 'aws_s3_bucket_public_access_block', 'audit')
  for (const k of ['block_public_acls', 'block_public_policy', 'ignore_public_acls', 'restrict_public_buckets']) t.equal(pab[k], true, k)
  const rules = res(lake, 'aws_s3_bucket_lifecycle_configuration', 'audit').rule as Hcl[]
  const byPrefix = new Map(rules.map((r) => [evaluate(lake, one(r, 'filter').prefix), r]))
  for (const p of ['log/', 'errors/']) {
    const r = byPrefix.get(p)
    t.ok(r, `lifecycle rule for ${p}`)
    t.equal(one(r, 'expiration').days, '${var.retention_days}', `${p} expires after the retention period`)
    t.ok(r.noncurrent_version_expiration, `${p}: old versions expire`)
  }
  t.ok(Number(lake.variables.retention_days.default) >= 365 * 5, 'default retention of five years')
  t.ok(byPrefix.has('athena-results/'), 'query results expire')
  const policy = lake.data.aws_iam_policy_document?.bucket.statement as Hcl[]
  t.ok(policy.some((s) => s.effect === 'Deny' && s.condition?.[0]?.variable === 'aws:SecureTransport'), 'deny plain HTTP')
  t.equal(res(lake, 'aws_s3_bucket_ownership_controls', 'audit').rule[0].object_ownership, 'BucketOwnerEnforced', 'no ACLs')
})

t.test('data lake: S3 Object Lock, opt-in behind a precondition naming what is unverified; never replaces the bucket', async (t) => {
  const lock = res(lake, 'aws_s3_bucket_object_lock_configuration', 'audit')
  t.equal(lock.count, '${var.object_lock_enabled ? 1 : 0}', 'only when asked for')
  t.equal(lake.variables.object_lock_enabled.default, false, 'off by default: Firehose delivery to a locked bucket is not documented')
  t.equal(lock.bucket, '${aws_s3_bucket.audit.id}')
  t.same(lock.depends_on, ['${aws_s3_bucket_versioning.audit}'], 'after versioning (Object Lock needs it)')
  t.equal(res(lake, 'aws_s3_bucket', 'audit').object_lock_enabled, undefined, 'not on aws_s3_bucket: that argument forces a new bucket')
  const retention = one(one(lock, 'rule'), 'default_retention')
  t.same([retention.mode, retention.days, retention.years], ['${var.object_lock_mode}', '${var.object_lock_retention_days}', undefined])
  const mode = lake.variables.object_lock_mode
  t.equal(mode.type, '${string}')
  t.equal(mode.default, 'COMPLIANCE')
  t.match(mode.validation[0].condition, /contains\(\["COMPLIANCE", "GOVERNANCE"\], var\.object_lock_mode\)/, 'COMPLIANCE or GOVERNANCE')
  const days = lake.variables.object_lock_retention_days
  t.same([days.type, days.default], ['${number}', 1826], 'five years, leap day included')
  t.match(days.description, /Lei 9\.613\/1998 art\. 10 §2º/, 'the legal source is in the description')
  t.ok(days.validation.length > 0)
  const pre = one(lock, 'lifecycle').precondition as Hcl[]
  const verified = pre.find((p) => p.condition === '${var.object_lock_firehose_delivery_verified}')
  t.ok(verified, 'a precondition: the operator verified Firehose delivery to a locked bucket')
  t.match(verified?.error_message, /Content-MD5 or an x-amz-checksum-\* header/, 'and it says exactly what is unverified')
  t.equal(lake.variables.object_lock_firehose_delivery_verified.default, false)
})

t.test('data lake: Firehose streams for spi and dict with the required prefixes, Parquet through the Glue table', async (t) => {
  t.same(SYSTEMS, ['spi', 'dict'])
  const fh = res(lake, 'aws_kinesis_firehose_delivery_stream', 'audit')
  t.equal(fh.for_each, '${toset(local.streams)}')
  t.equal(lake.locals.streams, '${concat(local.systems, local.gateway_systems)}', 'the proxy\'s spi and dict, and the gateway\'s when enabled')
  t.equal(fh.destination, 'extended_s3')
  const s3 = one(fh, 'extended_s3_configuration')
  for (const sys of SYSTEMS) {
    t.equal(evaluate(lake, s3.prefix, { 'each.key': sys }), `log/${sys}/year=!{timestamp:yyyy}/month=!{timestamp:MM}/day=!{timestamp:dd}/hour=!{timestamp:HH}/`, `${sys} prefix`)
    const err = String(evaluate(lake, s3.error_output_prefix, { 'each.key': sys }))
    t.match(err, /!\{firehose:error-output-type\}/, `${sys} error prefix separates error types`)
    t.ok(err.startsWith(`errors/${sys}/`), `${sys} errors land outside the table location`)
  }
  const streamName = (sys: string): string => String(evaluate(lake, fh.name, { 'each.key': sys, name: 'pix-proxy' }))
  t.equal(streamName('spi'), ConfigSchema.properties.PIXPROXY_AUDIT_FIREHOSE_SPI_STREAM.default, 'named like the proxy\'s default spi stream')
  t.equal(streamName('dict'), ConfigSchema.properties.PIXPROXY_AUDIT_FIREHOSE_DICT_STREAM.default, 'named like the proxy\'s default dict stream')
  t.ok(Number(evaluate(lake, s3.buffering_size)) >= 64, 'Parquet conversion needs >= 64 MiB buffers')
  t.match(lake.variables.firehose_buffering_size_mib.validation[0].condition, />= 64/)
  t.equal(s3.compression_format, 'UNCOMPRESSED', 'Parquet compresses its own pages')
  t.equal(s3.kms_key_arn, '${aws_kms_key.audit.arn}')
  const conv = one(s3, 'data_format_conversion_configuration')
  t.equal(conv.enabled, true)
  t.ok(one(one(one(conv, 'input_format_configuration'), 'deserializer'), 'open_x_json_ser_de'), 'OpenX JSON deserializer (parses ISO-8601 timestamps with milliseconds)')
  t.equal(one(one(one(conv, 'output_format_configuration'), 'serializer'), 'parquet_ser_de').compression, 'SNAPPY')
  const schema = one(conv, 'schema_configuration')
  t.equal(schema.table_name, '${aws_glue_catalog_table.audit[each.key].name}', 'each stream converts with its own table')
  t.equal(schema.database_name, '${aws_glue_catalog_database.audit.name}')
  const sse = one(fh, 'server_side_encryption')
  t.same([sse.enabled, sse.key_type], [true, 'CUSTOMER_MANAGED_CMK'])
  // The OpenX timestamp format AWS documents, against what the proxy writes.
  t.match(new Date(Date.UTC(2026, 10, 23, 10, 15, 30, 123)).toISOString(), /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{1,9}Z$/, 'request_date format is yyyy-MM-ddTHH:mm:ss.SZ')
})

t.test('data lake: Glue columns equal AUDIT_COLUMNS (names, types, order); partition projection over the Firehose layout', async (t) => {
  const cols = lake.locals.audit_columns as Array<{ name: string, type: string, comment: string }>
  t.same(cols.map((c) => c.name), AUDIT_COLUMNS.map((c) => c.name), 'names in order')
  t.same(cols.map((c) => c.type), AUDIT_COLUMNS.map((c) => c.type), 'Glue types equal the schema types')
  t.same(cols.map((c) => c.comment), AUDIT_COLUMNS.map((c) => c.description), 'comments are the schema descriptions')
  for (const c of cols) t.ok(['string', 'timestamp', 'int', 'bigint', 'double', 'boolean'].includes(c.type), `${c.name}: ${c.type} is a Hive type`)
  const table = res(lake, 'aws_glue_catalog_table', 'audit')
  t.equal(table.for_each, '${toset(local.streams)}', 'one table per system (and the gateway\'s)')
  t.equal(table.name, '${each.key}')
  const sd = one(table, 'storage_descriptor')
  t.equal(one(sd.dynamic.columns[0], 'content').name, '${columns.value.name}')
  t.equal(sd.dynamic.columns[0].for_each, '${local.columns[each.key]}', 'columns by table')
  t.equal(lake.locals.columns, '${merge({ for s in local.systems : s => local.audit_columns }, { for s in local.gateway_systems : s => local.gateway_audit_columns })}', 'spi and dict tables take local.audit_columns')
  t.equal(one(sd.dynamic.columns[0], 'content').type, '${columns.value.type}')
  t.equal(one(sd, 'ser_de_info').serialization_library, 'org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe')
  t.match(sd.input_format, /MapredParquetInputFormat$/)
  t.same(lake.locals.partition_keys, [...PARTITION_KEYS], 'partition keys year/month/day/hour')
  t.equal(table.dynamic.partition_keys[0].for_each, '${local.partition_keys}')
  t.equal(one(table.dynamic.partition_keys[0], 'content').type, 'string', 'zero-padded strings')
  const p = table.parameters
  t.equal(p['projection.enabled'], 'true')
  for (const k of PARTITION_KEYS) t.equal(p[`projection.${k}.type`], 'integer', `${k} projected`)
  for (const k of ['month', 'day', 'hour']) t.equal(p[`projection.${k}.digits`], '2', `${k} zero-padded like the prefix`)
  t.same([p['projection.month.range'], p['projection.day.range'], p['projection.hour.range']], ['1,12', '1,31', '0,23'])
  // The projected location is exactly the Firehose prefix with its timestamp fields as partition values.
  const s3 = one(res(lake, 'aws_kinesis_firehose_delivery_stream', 'audit'), 'extended_s3_configuration')
  for (const sys of SYSTEMS) {
    const inputs = { 'each.key': sys, 'aws_s3_bucket.audit.bucket': 'audit-bucket' }
    const template = String(evaluate(lake, p['storage.location.template'], inputs))
    const fromPrefix = String(evaluate(lake, s3.prefix, { 'each.key': sys }))
      .replace('!{timestamp:yyyy}', '${year}').replace('!{timestamp:MM}', '${month}').replace('!{timestamp:dd}', '${day}').replace('!{timestamp:HH}', '${hour}')
    t.equal(template, 's3://audit-bucket/' + fromPrefix, `${sys}: the projection template is the Firehose prefix`)
    t.equal(evaluate(lake, sd.location, inputs), `s3://audit-bucket/log/${sys}/`, `${sys}: table location`)
  }
})

t.test('data lake: Athena workgroup enforces encrypted results', async (t) => {
  const wg = res(lake, 'aws_athena_workgroup', 'audit')
  const c = one(wg, 'configuration')
  t.equal(c.enforce_workgroup_configuration, true, 'clients cannot override the result location or encryption')
  const rc = one(c, 'result_configuration')
  t.equal(evaluate(lake, rc.output_location, { 'aws_s3_bucket.audit.bucket': 'audit-bucket' }), 's3://audit-bucket/athena-results/', 'results under the expiring prefix')
  const enc = one(rc, 'encryption_configuration')
  t.equal(enc.encryption_option, 'SSE_KMS')
  t.equal(enc.kms_key_arn, '${aws_kms_key.audit.arn}')
  t.ok(Number(evaluate(lake, c.bytes_scanned_cutoff_per_query)) > 0, 'a scan cutoff guards against unfiltered queries')
})

// ---------------------------------------------------------------------------------------------------------------
// IAM
// ---------------------------------------------------------------------------------------------------------------

// Actions AWS only authorises on "*" (no resource-level permissions).
const STAR_RESOURCE_ACTIONS = new Set(['ecr:GetAuthorizationToken'])

t.test('IAM: least privilege in every policy document', async (t) => {
  let statements = 0
  for (const m of all.values()) {
    for (const [name, doc] of Object.entries<Hcl>(m.data.aws_iam_policy_document ?? {})) {
      for (const s of doc.statement as Hcl[]) {
        statements++
        const where = `${m.dir}: ${name}${s.sid === undefined ? '' : '/' + String(s.sid)}`
        const effect = s.effect ?? 'Allow'
        const actions = (s.actions ?? []) as string[]
        const resources = (Array.isArray(s.resources) ? s.resources : s.resources === undefined ? [] : [s.resources]) as string[]
        if (effect === 'Deny') continue
        t.notOk(s.not_actions ?? s.not_resources, `${where}: no NotAction/NotResource in an Allow`)
        t.ok(actions.length > 0, `${where}: names its actions`)
        for (const a of actions) t.notOk(a.includes('*'), `${where}: ${a} is not a wildcard action`)
        if (s.principals !== undefined && resources.length === 0) continue // a trust policy
        t.ok(resources.length > 0, `${where}: names its resources`)
        // In a key policy "*" is the key the policy is attached to, not every resource.
        const keyPolicy = m.dir === 'modules/kms_signer' && name === 'key' && s.principals !== undefined
        if (resources.includes('*') && !keyPolicy) {
          for (const a of actions) t.ok(STAR_RESOURCE_ACTIONS.has(a), `${where}: ${a} on "*" only because AWS requires it`)
        }
        for (const r of resources) t.notMatch(r, /^arn:[^:]*:[^:]*:[^:]*:[^:]*:\*$/, `${where}: ${r} is not every resource of a service`)
      }
    }
  }
  t.ok(statements >= 20, `${statements} statements checked`)
  // Policies are documents, not jsonencode() or heredoc strings, so the checks above see all of them.
  for (const [type, attr] of [['aws_iam_role_policy', 'policy'], ['aws_iam_policy', 'policy'], ['aws_iam_role', 'assume_role_policy'], ['aws_s3_bucket_policy', 'policy'], ['aws_efs_file_system_policy', 'policy']] as const) {
    for (const { m, name, r } of resourcesOf(type)) {
      // ecs_service attaches its caller's document (each caller's is checked to be one, below and in the moved test).
      const v = m === ecsService && r[attr] === '${var.task_policy_json}' ? ecsCall(service).task_policy_json : r[attr]
      t.match(v, /^\$\{data\.aws_iam_policy_document\.\w+\.json\}$/, `${m.dir}: ${type}.${name} uses a policy document`)
    }
  }
  for (const { m, name, r } of resourcesOf('aws_iam_role_policy_attachment')) t.notMatch(r.policy_arn, /::aws:policy\//, `${m.dir}: ${name} attaches no AWS managed policy`)
  for (const { m, name, r } of resourcesOf('aws_iam_role')) t.notOk(r.managed_policy_arns, `${m.dir}: ${name} has no managed policies`)
})

t.test('IAM: the task role can do what the proxy does and nothing else', async (t) => {
  const task = statementsOf(service, service.data.aws_iam_policy_document?.task)
  const actions = task.flatMap((s) => s.actions as string[]).sort()
  t.same(actions, [
    'elasticfilesystem:ClientMount', 'elasticfilesystem:ClientWrite', 'firehose:PutRecord', 'firehose:PutRecordBatch',
    'kms:Decrypt', 'logs:CreateLogStream', 'logs:DescribeLogStreams', 'logs:PutLogEvents', 'secretsmanager:GetSecretValue',
    'ssm:GetParametersByPath'
  ], 'config-sources GetParametersByPath, fetchPin GetSecretValue, FirehoseSink PutRecordBatch, EFS, the agent\'s EMF')
  const byAction = (a: string): Hcl => task.find((s) => (s.actions as string[]).includes(a))
  t.same(byAction('ssm:GetParametersByPath').resources, ['${var.config_ssm_path_arn}', '${var.config_ssm_path_arn}/*'])
  t.equal(byAction('secretsmanager:GetSecretValue').resources, '${local.proxy_secret_arns}')
  t.equal(service.locals.proxy_secret_arns, '${var.signer == "cloudhsm" ? [var.hsm_pin_secret_arn] : [var.tls_key_secret_arn]}', 'the PIN (cloudhsm) or the TLS client key (kms), one secret')
  t.equal(byAction('firehose:PutRecordBatch').resources, '${values(var.audit_stream_arns)}')
  t.equal(byAction('kms:Decrypt').condition[0].variable, 'kms:ViaService', 'decrypt only through SSM and Secrets Manager')
  t.equal(byAction('elasticfilesystem:ClientMount').condition[0].variable, 'elasticfilesystem:AccessPointArn', 'EFS only through the access point')
  // config-sources.ts calls GetParametersByPath and nothing else on SSM; fetchPin calls GetSecretValue.
  const sources = await readFile(join(REPO, 'src/config-sources.ts'), 'utf8')
  t.match(sources, /GetParametersByPathCommand/)
  t.notMatch(sources, /GetParameterCommand|GetParametersCommand/, 'the proxy needs no ssm:GetParameter(s)')
})

// ---------------------------------------------------------------------------------------------------------------
// monitoring
// ---------------------------------------------------------------------------------------------------------------

const monitoring = mod('modules/monitoring')

/** The EMF metric name an alarm's `${local.m.<key>}` resolves to: monitoring's input, wired to the service's local. */
function emfName (metricName: unknown): string {
  const key = /^\$\{local\.m\.(\w+)\}$/.exec(String(metricName))?.[1]
  if (key === undefined) throw new Error(`not a request metric reference: ${String(metricName)}`)
  const name = (service.locals.emf_metrics as Record<string, string>)[key]
  if (name === undefined) throw new Error(`service module has no emf_metrics.${key}`)
  return name
}

t.test('monitoring: alarms for 5xx rate, p99 latency, HSM errors and audit backlog age; a dashboard', async (t) => {
  const alarms = Object.values<Hcl>(monitoring.resources.aws_cloudwatch_metric_alarm ?? {})
  t.equal(monitoring.locals.m, '${var.request_metric_names}')
  const rate = res(monitoring, 'aws_cloudwatch_metric_alarm', 'http_5xx_rate')
  const q = rate.metric_query as Hcl[]
  t.equal(emfName(one(q.find((x) => x.id === 'errors'), 'metric').metric_name), EMF_METRICS.responses5xx)
  t.equal(emfName(one(q.find((x) => x.id === 'requests'), 'metric').metric_name), EMF_METRICS.requests)
  for (const x of q.filter((x) => x.metric !== undefined)) t.equal(one(x, 'metric').dimensions, '${local.service_dimension}', `${String(x.id)} by service`)
  t.match(q.find((x) => x.return_data === true)?.expression, /100 \* FILL\(errors, 0\) \/ requests/, 'a rate in percent')
  const p99 = res(monitoring, 'aws_cloudwatch_metric_alarm', 'latency_p99')
  t.equal(p99.extended_statistic, 'p99')
  t.equal(emfName(p99.metric_name), EMF_METRICS.latency)
  t.equal(p99.dimensions, '${local.service_dimension}')
  const hsm = res(monitoring, 'aws_cloudwatch_metric_alarm', 'hsm_errors')
  t.equal(hsm.metric_name, 'pixproxy_errors_total')
  t.equal(hsm.dimensions, '${merge(local.service_dimension, { error_class = "hsm" })}')
  const backlog = res(monitoring, 'aws_cloudwatch_metric_alarm', 'audit_backlog_age')
  t.equal(backlog.metric_name, 'pixproxy_audit_oldest_unshipped_seconds')
  t.equal(backlog.statistic, 'Maximum', 'the oldest row of any task')
  t.equal(backlog.treat_missing_data, 'breaching', 'no metrics = the audit trail is unobserved')
  for (const a of alarms) t.equal(a.alarm_actions, '${local.common.alarm_actions}', `${String(a.alarm_name)} notifies`)
  const dash = res(monitoring, 'aws_cloudwatch_dashboard', 'this')
  t.match(dash.dashboard_body, /jsonencode\(\{\s*widgets = \[/)
  t.ok((dash.dashboard_body as string).split('type = "metric"').length - 1 >= 6, 'six or more metric widgets')
  for (const a of ['bacen_signature_invalid', 'outcome_unknown_rate', 'unhealthy_targets', 'healthy_targets']) {
    t.match(dash.dashboard_body, `aws_cloudwatch_metric_alarm.${a}.arn`, `the dashboard's alarm widget shows ${a}`)
    t.ok(monitoring.outputs.alarm_arns.value.includes(`aws_cloudwatch_metric_alarm.${a}.arn`), `alarm_arns has ${a}`)
  }
  for (const g of (dash.dashboard_body as string).matchAll(/local\.m\.\w+/g)) t.ok(Object.values(EMF_METRICS).includes(emfName('${' + g[0] + '}') as never), `dashboard ${g[0]} is a metric the proxy writes`)
})

t.test('monitoring: request metrics are the proxy\'s EMF names and dimensions, wired from the service module; no log metric filter', async (t) => {
  // The names: the service module's local against the TypeScript constants, key by key.
  t.same(service.locals.emf_metrics, {
    latency: EMF_METRICS.latency,
    requests: EMF_METRICS.requests,
    outcome_unknown: EMF_METRICS.outcomeUnknown,
    signature_invalid: EMF_METRICS.signatureInvalid,
    responses_5xx: EMF_METRICS.responses5xx,
    kms_sign_latency: EMF_KMS_SIGN_LATENCY
  })
  t.equal(service.outputs.request_metric_names.value, '${local.emf_metrics}')
  const ex = mod(EXAMPLE)
  t.equal(ex.modules.monitoring.request_metric_names, '${module.service.request_metric_names}')
  t.equal(ex.modules.monitoring.metric_namespace, '${module.service.metric_namespace}')
  t.equal(ex.modules.monitoring.service_name, '${module.service.service_name}')
  const declared = [...(monitoring.variables.request_metric_names.type as string).matchAll(/(\w+)\s*=\s*string/g)].map((g) => g[1])
  t.same(declared.sort(), Object.keys(service.locals.emf_metrics).sort(), 'monitoring expects exactly the service\'s EMF metrics')
  // The dimension: alarms read by service alone, which the proxy publishes every metric under; the value is the
  // ECS service name the task sets as PIXPROXY_METRICS_EMF_SERVICE, in the namespace it sets.
  t.same(monitoring.locals.service_dimension, { [EMF_DIMENSIONS.service]: '${var.service_name}' })
  const byService = EMF_DIRECTIVES.find((d) => d.dimensions.some((set) => set.length === 1 && set[0] === EMF_DIMENSIONS.service))
  t.same([...(byService?.metrics ?? [])].sort(), Object.values(EMF_METRICS).sort(), 'every metric by service alone')
  t.same([proxyEnv.PIXPROXY_METRICS_EMF, proxyEnv.PIXPROXY_METRICS_EMF_NAMESPACE, proxyEnv.PIXPROXY_METRICS_EMF_SERVICE], ['true', '${local.metric_namespace}', '${var.name}'])
  t.equal(service.outputs.metric_namespace.value, '${local.metric_namespace}')
  t.equal(service.outputs.service_name.value, '${module.ecs_service.service_name}')
  t.equal(ecsService.outputs.service_name.value, '${aws_ecs_service.this.name}')
  t.equal(through(service, res(ecsService, 'aws_ecs_service', 'this').name), '${var.name}', 'the service name is the EMF service dimension')
  // Nothing counts log lines by their text any more.
  t.same(resourcesOf('aws_cloudwatch_log_metric_filter').map((r) => `${r.m.dir}:${r.name}`), [], 'no log metric filter')
})

t.test('monitoring: BACEN signature failures, OUTCOME UNKNOWN rate and unready targets alarm', async (t) => {
  const sig = res(monitoring, 'aws_cloudwatch_metric_alarm', 'bacen_signature_invalid')
  t.equal(emfName(sig.metric_name), EMF_METRICS.signatureInvalid)
  t.same([sig.namespace, sig.dimensions, sig.statistic, sig.comparison_operator, sig.threshold], ['${local.ns}', '${local.service_dimension}', 'Sum', 'GreaterThanThreshold', 0], 'any failure in a minute')
  t.equal(sig.evaluation_periods, 1, 'the first one alarms')

  const unknown = res(monitoring, 'aws_cloudwatch_metric_alarm', 'outcome_unknown_rate')
  const q = unknown.metric_query as Hcl[]
  t.equal(emfName(one(q.find((x) => x.id === 'unknown'), 'metric').metric_name), EMF_METRICS.outcomeUnknown)
  t.equal(emfName(one(q.find((x) => x.id === 'requests'), 'metric').metric_name), EMF_METRICS.requests)
  for (const x of q.filter((x) => x.metric !== undefined)) t.same([one(x, 'metric').stat, one(x, 'metric').dimensions], ['Sum', '${local.service_dimension}'])
  t.match(q.find((x) => x.return_data === true)?.expression, /100 \* FILL\(unknown, 0\) \/ requests/, 'percent of requests')
  t.equal(unknown.threshold, '${var.outcome_unknown_rate_percent}')
  const v = monitoring.variables.outcome_unknown_rate_percent
  t.equal(v.type, '${number}', 'typed')
  t.match(v.description, /OUTCOME UNKNOWN/, 'described')
  t.ok(Number(v.default) > 0 && Number(v.default) < 100)
  t.match(v.validation[0].condition, /var\.outcome_unknown_rate_percent >= 0/)

  const unhealthy = res(monitoring, 'aws_cloudwatch_metric_alarm', 'unhealthy_targets')
  t.same([unhealthy.namespace, unhealthy.metric_name, unhealthy.statistic, unhealthy.comparison_operator, unhealthy.threshold], ['AWS/NetworkELB', 'UnHealthyHostCount', 'Maximum', 'GreaterThanThreshold', 0], 'any unready target')
  t.same(unhealthy.dimensions, { LoadBalancer: '${var.nlb_arn_suffix}', TargetGroup: '${var.target_group_arn_suffix}' }, 'the service\'s target group')
  const healthy = res(monitoring, 'aws_cloudwatch_metric_alarm', 'healthy_targets')
  t.same([healthy.metric_name, healthy.comparison_operator], ['HealthyHostCount', 'LessThanThreshold'], 'and too few ready ones')
})

t.test('metrics: every pixproxy_* name in the Terraform is registered by the proxy; the HSM relabel matches the HSM codes', async (t) => {
  // Every source file: metrics are registered where their data lives (plugins, routes, http).
  const { readdir } = await import('node:fs/promises')
  const sources = (await readdir(join(REPO, 'src'), { recursive: true })).filter((f) => f.endsWith('.ts'))
  const src = (await Promise.all(sources.map(async (f) => await readFile(join(REPO, 'src', f), 'utf8')))).join('\n')
  const registered = new Set([...src.matchAll(/name: '(pixproxy_[a-z_]+)'/g)].map((g) => g[1] as string))
  t.ok(registered.has('pixproxy_audit_oldest_unshipped_seconds') && registered.has('pixproxy_errors_total'))
  const referenced = new Set<string>()
  for (const m of [service, monitoring]) {
    for (const s of [...m.files.values()].flatMap((j) => allStrings(j))) for (const g of s.matchAll(/pixproxy_[a-z_]+[a-z]/g)) referenced.add(g[0])
  }
  t.ok(referenced.size >= 8, `${referenced.size} metric names referenced`)
  for (const name of referenced) t.ok(registered.has(name), `${name} is registered in src/`)
  const relabel = service.locals.prometheus_scrape_config.scrape_configs[0].metric_relabel_configs[0]
  const re = new RegExp(`^${relabel.regex as string}$`)
  const codes = Object.values(Errors).map((e) => e.code)
  const hsmCodes = codes.filter((c) => c.startsWith('PIXPROXY_ERR_HSM_'))
  t.ok(hsmCodes.length >= 5, 'the catalogue has HSM codes')
  for (const c of codes) t.equal(re.test(c), hsmCodes.includes(c), `${c} ${hsmCodes.includes(c) ? 'is' : 'is not'} an HSM error`)
  t.same(relabel.source_labels, ['code'], 'pixproxy_errors_total is labelled by code')
  t.match(src, /name: 'pixproxy_errors_total'[^\n]*labelNames: \['code'\]/)
})

t.test('SPI: the participant-wide ICOM limit holds at the largest task count', async (t) => {
  const perTask = Number(evaluate(service, service.locals.spi_max_in_flight_per_task))
  const max = Number(evaluate(service, '${var.autoscaling.max_capacity}'))
  const limit = Number(evaluate(service, '${var.spi_participant_max_in_flight}'))
  t.equal(limit, ConfigSchema.properties.PIXPROXY_SPI_MAX_IN_FLIGHT.default, 'BACEN\'s 6 per participant')
  t.ok(perTask >= 1 && perTask * max <= limit, `${max} tasks x ${perTask} in flight <= ${limit}`)
  t.equal(proxyEnv.PIXPROXY_SPI_MAX_IN_FLIGHT, '${tostring(local.spi_max_in_flight_per_task)}')
  const ex = mod(EXAMPLE).modules.service.autoscaling
  t.ok(Math.floor(limit / Number(ex.max_capacity)) * Number(ex.max_capacity) <= limit && Number(ex.max_capacity) <= limit, 'the example stays within the limit')
})

t.test('KMS: the service stays within its share of the account\'s RSA quota at the largest task count', async (t) => {
  const perTask = Number(evaluate(service, service.locals.kms_signs_per_sec_per_task))
  const max = Number(evaluate(service, '${var.autoscaling.max_capacity}'))
  const share = Number(evaluate(service, '${var.kms_sign_rate_share}'))
  t.ok(share < 500, `the default share (${share}/s) leaves headroom under KMS's default 500/s`)
  t.ok(perTask >= 1 && perTask * max <= share, `${max} tasks x ${perTask} signs/s <= ${share}`)
  t.equal(perTask, ConfigSchema.properties.PIXPROXY_KMS_MAX_SIGNS_PER_SEC.default, 'the defaults agree with the proxy\'s own default (three tasks)')
  t.equal(signerSettings.kms.environment.PIXPROXY_KMS_MAX_SIGNS_PER_SEC, '${tostring(local.kms_signs_per_sec_per_task)}', 'each task gets its share as its rate limit')
  t.notOk('PIXPROXY_KMS_MAX_SIGNS_PER_SEC' in signerSettings.cloudhsm.environment, 'not with cloudhsm')
})

t.test('images are pinned: the service module refuses :latest or no tag, and the example pins both', async (t) => {
  const tfvars = await readFile(join(TF_ROOT, 'examples/complete/terraform.tfvars.example'), 'utf8')
  for (const v of ['image', 'cloudwatch_agent_image']) {
    const condition = service.variables[v].validation[0].condition as string
    // The module's own pattern, run here: HCL's regex() is RE2, and this pattern means the same in JavaScript.
    const pinned = new RegExp((/regex\("([^"]+)", var\./.exec(condition)?.[1] ?? '(?!)').replace(/\\\\/g, '\\'))
    const passes = (image: string): boolean => pinned.test(image) && !/:latest$/.test(image)
    t.match(condition, /:latest\$/, `${v}: :latest refused`)
    t.ok(passes('111122223333.dkr.ecr.sa-east-1.amazonaws.com/pix-proxy:1.0.0'), `${v}: a version tag passes`)
    t.ok(passes(`111122223333.dkr.ecr.sa-east-1.amazonaws.com/pix-proxy@sha256:${'a'.repeat(64)}`), `${v}: a digest passes`)
    t.notOk(passes('111122223333.dkr.ecr.sa-east-1.amazonaws.com/pix-proxy:latest'), `${v}: :latest fails`)
    t.notOk(passes('registry.example:5000/pix-proxy'), `${v}: no tag fails (a registry port is not a tag)`)
    const example = new RegExp(`^${v}\\s*=\\s*"([^"]+)"`, 'm').exec(tfvars)?.[1]
    t.ok(example !== undefined && passes(example), `the example's ${v} is pinned (${String(example)})`)
  }
})

t.test('example: a missing PEM in pem_dir is named (a precondition listing the files), not an "Invalid index"', async (t) => {
  const ex = mod(EXAMPLE)
  const main = await readFile(join(TF_ROOT, EXAMPLE, 'main.tf'), 'utf8')
  // concat([...every signer's...], local.hsm ? ["cloudhsm-customer-ca"] : []): every name either way.
  const names = [...String(ex.locals.pem_names).matchAll(/"([a-z-]+)"/g)].map((g) => g[1] as string)
  const used = [...main.matchAll(/local\.pem\["([a-z-]+)"\]/g)].map((m) => m[1] as string)
  t.ok(used.length >= 7, `${used.length} PEMs used`)
  for (const u of used) t.ok(names.includes(u), `${u} is in pem_names, so its absence is reported by name`)
  t.match(String(ex.locals.pem), /fileexists\(/, 'a missing file is null, not an error without its name')
  const pre = one(res(ex, 'terraform_data', 'pem_files'), 'lifecycle').precondition as Hcl[]
  t.match(pre[0]?.condition, /length\(local\.missing_pem\) == 0/)
  t.match(pre[0]?.error_message, /join\(", ", local\.missing_pem\)/, 'the error lists the missing paths')
})

// ---------------------------------------------------------------------------------------------------------------
// The signer: cloudhsm or kms (issue 16)
// ---------------------------------------------------------------------------------------------------------------

const kmsSigner = mod('modules/kms_signer')

t.test('signer: one validated choice, "cloudhsm" by default, passed by the example to every module it changes', async (t) => {
  const ex = mod(EXAMPLE)
  for (const m of [ex, config, service, monitoring]) {
    const v = m.variables.signer
    t.equal(v?.type, '${string}', `${m.dir}: var.signer is a string`)
    t.equal(v?.default, 'cloudhsm', `${m.dir}: CloudHSM unless KMS is chosen (existing deployments unchanged)`)
    t.match(v?.validation?.[0]?.condition, /contains\(\["cloudhsm", "kms"\], var\.signer\)/, `${m.dir}: only cloudhsm or kms`)
  }
  for (const call of ['config', 'service', 'monitoring']) t.equal(ex.modules[call].signer, '${var.signer}', `module.${call} gets the example's choice`)
  t.equal(ex.locals.hsm, '${var.signer == "cloudhsm"}')
  const tfvars = await readFile(join(TF_ROOT, EXAMPLE, 'terraform.tfvars.example'), 'utf8')
  t.match(tfvars, /^signer = "cloudhsm"$/m, 'the tfvars example names the choice')
})

t.test('signer = "kms": no CloudHSM cluster, HSM, HSM security group rule, PIN, CloudHSM setting or alarm; "cloudhsm" keeps them all', async (t) => {
  const ex = mod(EXAMPLE)
  // Every CloudHSM resource and HSM security group rule is in the hsm module, which exists with cloudhsm only.
  const hsmModule = mod('modules/hsm')
  for (const type of ['aws_cloudhsm_v2_cluster', 'aws_cloudhsm_v2_hsm']) {
    t.same(resourcesOf(type).map((r) => r.m.dir), ['modules/hsm'], `${type} only in the hsm module`)
  }
  t.ok(hsmModule.resources.aws_vpc_security_group_ingress_rule?.hsm_from_clients && hsmModule.resources.aws_vpc_security_group_egress_rule?.clients_to_hsm, 'the HSM security group rules are the hsm module\'s')
  const ports = /2223|2225|hsm_ports/
  for (const type of ['aws_vpc_security_group_ingress_rule', 'aws_vpc_security_group_egress_rule']) {
    // The gateway is an HSM client too; it exists only with cloudhsm (the example's precondition, asserted below).
    for (const { m, name, r } of resourcesOf(type)) if (m !== hsmModule && m.dir !== 'modules/gateway') t.notMatch(JSON.stringify(r), ports, `${m.dir}: ${name} is no HSM rule`)
  }
  const expected: Array<[TfModule, string, string, Signer[]]> = [
    [ex, 'module', 'hsm', ['cloudhsm']],
    [ex, 'module', 'kms_signer', ['kms']],
    [config, 'aws_secretsmanager_secret', 'hsm_pin', ['cloudhsm']],
    [config, 'aws_ssm_parameter', 'hsm_pin_secret_id', ['cloudhsm']],
    [config, 'aws_ssm_parameter', 'cloudhsm_customer_ca', ['cloudhsm']],
    [config, 'aws_secretsmanager_secret', 'tls_key', ['kms']],
    [config, 'aws_ssm_parameter', 'tls_key_secret_id', ['kms']],
    [monitoring, 'aws_cloudwatch_metric_alarm', 'hsm_errors', ['cloudhsm']],
    [monitoring, 'aws_cloudwatch_metric_alarm', 'cloudhsm_unhealthy', ['cloudhsm']],
    [monitoring, 'aws_cloudwatch_metric_alarm', 'kms_throttles', ['kms']],
    [monitoring, 'aws_cloudwatch_metric_alarm', 'kms_errors', ['kms']],
    [monitoring, 'aws_cloudwatch_metric_alarm', 'kms_rsa_quota_usage', ['kms']],
    [monitoring, 'aws_cloudwatch_metric_alarm', 'kms_sign_latency_p99', ['kms']],
  ]
  for (const [m, type, name, with_] of expected) {
    const r = type === 'module' ? m.modules[name] : res(m, type, name)
    t.ok(r, `${m.dir}: ${type} ${name}`)
    for (const s of SIGNERS) t.equal(presentWith(m, r, s), with_.includes(s), `${m.dir}: ${type === 'module' ? 'module.' : type + '.'}${name} ${with_.includes(s) ? 'exists' : 'does not exist'} with signer = "${s}"`)
  }
  // Everything else in the example and the modules exists either way: the choice changes nothing but the above.
  const chosen = new Set(expected.map(([m, type, name]) => `${m.dir}:${type}:${name}`))
  for (const m of [ex, config, service, monitoring]) {
    for (const [type, byName] of Object.entries<Record<string, Hcl>>(m.resources)) {
      for (const [name, r] of Object.entries<Hcl>(byName)) {
        if (chosen.has(`${m.dir}:${type}:${name}`) || r.count === undefined || !/signer|local\.(hsm|kms)\b/.test(String(r.count))) continue
        t.fail(`${m.dir}: ${type}.${name} depends on the signer but is not in the list above`)
      }
    }
  }
  // Settings: no HSM setting in SSM or the environment with kms; the KMS ones instead.
  const hsmNames = /^(PIXPROXY_HSM_|CLOUDHSM_)|^PIXPROXY_(SIGNING|TLS)_KEY_LABEL$/
  const kmsSsm = configParameters('kms')
  const hsmSsm = configParameters('cloudhsm')
  t.same([...kmsSsm.keys()].filter((k) => hsmNames.test(k)), [], 'SSM: no HSM setting with kms')
  t.same([...Object.keys(kmsEnv), ...Object.keys(signerSettings.kms.secrets)].filter((k) => hsmNames.test(k)), [], 'task: no HSM setting, CloudHSM IP or CA with kms')
  t.same(Object.keys(signerSettings.kms.secrets), [], 'no container secret with kms (the CloudHSM CA is the only one)')
  t.equal(kmsEnv.PIXPROXY_SIGNING_KMS_KEY_ID, '${var.signing_kms_key_id}', 'PIXPROXY_SIGNING_KMS_KEY_ID in the environment (it follows from this infrastructure)')
  t.equal(ex.modules.service.signing_kms_key_id, '${local.hsm ? null : module.kms_signer[0].alias_arn}', 'the signing key\'s alias ARN')
  t.ok(kmsSsm.has('PIXPROXY_TLS_KEY_SECRET_ID') && !hsmSsm.has('PIXPROXY_TLS_KEY_SECRET_ID'), 'PIXPROXY_TLS_KEY_SECRET_ID in SSM with kms only (beside where PIXPROXY_HSM_PIN_SECRET_ID is with cloudhsm)')
  t.ok(hsmSsm.has('PIXPROXY_HSM_PIN_SECRET_ID') && !kmsSsm.has('PIXPROXY_HSM_PIN_SECRET_ID'))
  for (const k of ['PIXPROXY_HSM_TOKEN_LABEL', 'PIXPROXY_SIGNING_KEY_LABEL', 'PIXPROXY_TLS_KEY_LABEL']) t.ok(hsmSsm.has(k), `${k} in SSM with cloudhsm`)
  t.notOk('PIXPROXY_SIGNING_KMS_KEY_ID' in proxyEnv, 'no KMS key with cloudhsm')
  for (const n of [...Object.keys(kmsEnv), ...kmsSsm.keys()]) {
    if (n.startsWith('PIXPROXY_')) t.ok(isSetting(n), `${n} is a proxy setting (CONFIG_KEYS)`)
  }
  t.same([exampleExtraSettings('cloudhsm'), exampleExtraSettings('kms')], [['PIXPROXY_LOG_LEVEL', 'PIXPROXY_HSM_POOL_SIZE'], ['PIXPROXY_LOG_LEVEL']], 'the HSM pool size only with cloudhsm')
  for (const k of exampleExtraSettings('kms')) t.notOk(k in kmsEnv, `example extra setting ${k} is not shadowed by the environment with kms`)
  // IAM: the secret the task reads; the container secrets the execution role reads.
  t.equal(ex.modules.service.tls_key_secret_arn, '${module.config.tls_key_secret_arn}')
  // The service refuses inputs of the other signer.
  const pre = one(res(service, 'aws_ecs_task_definition', 'this'), 'lifecycle').precondition as Hcl[]
  t.ok(pre.some((p) => /var\.signer == "cloudhsm"/.test(p.condition) && /var\.signing_kms_key_id != null/.test(p.condition) && /var\.hsm_pin_secret_arn == null/.test(p.condition)), 'inputs of exactly one signer')
  // PEM files: the CloudHSM CA is not asked for with kms.
  t.equal(ex.locals.pem_names, '${concat(["signing-cert", "tls-cert", "bacen-tls-ca", "bacen-signing-certs", "inbound-tls-cert", "inbound-client-ca"], local.hsm ? ["cloudhsm-customer-ca"] : [], var.enable_gateway ? ["gateway-server-cert"] : [])}')
})

t.test('kms_signer: an RSA_2048 SIGN_VERIFY key, a deletion window, an alias; only the task role may sign', async (t) => {
  const key = res(kmsSigner, 'aws_kms_key', 'signing')
  t.equal(key.customer_master_key_spec, 'RSA_2048', 'the spec src/kms/signer.ts requires')
  t.equal(key.key_usage, 'SIGN_VERIFY')
  t.equal(key.deletion_window_in_days, '${var.deletion_window_in_days}')
  const dw = kmsSigner.variables.deletion_window_in_days
  t.same([dw.type, dw.default], ['${number}', 30])
  t.match(dw.validation[0].condition, /var\.deletion_window_in_days >= 7 && var\.deletion_window_in_days <= 30/, 'what KMS accepts: 7 to 30 days')
  t.equal(key.policy, '${data.aws_iam_policy_document.key.json}')
  t.ok(one(key, 'lifecycle').prevent_destroy, 'never destroyed by a plan: its certificate would be useless')
  const alias = res(kmsSigner, 'aws_kms_alias', 'signing')
  t.equal(alias.target_key_id, '${aws_kms_key.signing.key_id}')
  t.match(alias.name, /^alias\//)
  t.equal(kmsSigner.outputs.alias_arn.value, '${aws_kms_alias.signing.arn}')

  const statements = kmsSigner.data.aws_iam_policy_document?.key.statement as Hcl[]
  t.equal(statements.length, 2, 'the account\'s administration and the task role\'s use, nothing else')
  const actionsOf = (st: Hcl): string[] => (expr(st.actions) !== undefined ? evaluate(kmsSigner, st.actions) : st.actions) as string[]
  const principalsOf = (st: Hcl): string[] => one(st, 'principals').identifiers as string[]
  const crypto = ['kms:Sign', 'kms:Verify', 'kms:GetPublicKey', 'kms:Decrypt', 'kms:Encrypt', 'kms:ReEncryptFrom', 'kms:ReEncryptTo', 'kms:CreateGrant', 'kms:GenerateDataKey']
  const signers = statements.filter((st) => actionsOf(st).includes('kms:Sign'))
  t.equal(signers.length, 1, 'one statement may sign')
  t.same(principalsOf(signers[0]), ['${var.task_role_arn}'], 'and its principal is the task role alone')
  t.same([...actionsOf(signers[0])].sort(), ['kms:DescribeKey', 'kms:GetPublicKey', 'kms:Sign'], 'what the proxy calls, nothing more')
  for (const st of statements) {
    t.notOk(st.effect === 'Deny', 'no Deny needed: nothing else is allowed')
    t.notOk(st.condition, 'no condition widens or narrows it silently')
    t.same(st.resources, ['*'], 'in a key policy, "*" is this key')
  }
  const admin = statements.find((st) => st !== signers[0])
  t.same(principalsOf(admin), ['${local.account_root}'], 'the account administers the key, as AWS requires')
  t.match(kmsSigner.locals.account_root, /:iam::\$\{data\.aws_caller_identity\.current\.account_id\}:root$/)
  t.ok(actionsOf(admin).includes('kms:PutKeyPolicy'), 'the account can change the policy (KMS refuses a policy that locks its author out)')
  for (const a of crypto) t.notOk(actionsOf(admin).includes(a), `the account statement does not allow ${a}: IAM cannot hand the key to another principal`)
  // The actions are the commands the signer sends.
  const signer = await readFile(join(REPO, 'src/kms/signer.ts'), 'utf8')
  const commands = [...new Set([...signer.matchAll(/new (\w+)Command\(/g)].map((g) => `kms:${g[1] as string}`))].sort()
  t.same(commands, [...actionsOf(signers[0])].sort(), 'src/kms/signer.ts sends exactly these')
  // Wiring: the service's task role, for the example.
  t.equal(mod(EXAMPLE).modules.kms_signer.task_role_arn, '${module.service.task_role_arn}')
  t.equal(mod(EXAMPLE).modules.kms_signer.deletion_window_in_days, '${var.kms_deletion_window_in_days}')
})

t.test('network: with signer = "kms" an interface endpoint for KMS, private DNS, HTTPS from the tasks only', async (t) => {
  const m = mod('modules/network')
  t.equal(m.variables.create_kms_endpoint.default, false, 'no KMS endpoint unless asked for')
  t.equal(mod(EXAMPLE).modules.network.create_kms_endpoint, '${!local.hsm}', 'the example asks for it with kms')
  // The endpoint is one of the interface endpoints: for_each over the set that then includes "kms".
  const iface = res(m, 'aws_vpc_endpoint', 'interface')
  t.equal(iface.for_each, '${local.interface_endpoint_services}')
  t.match(m.locals.interface_endpoint_services, /var\.create_kms_endpoint \? \["kms"\] : \[\]/)
  t.equal(String(evaluate(m, iface.service_name.replace('${data.aws_region.current.name}', 'sa-east-1'), { 'each.value': 'kms' })), 'com.amazonaws.sa-east-1.kms')
  t.equal(iface.private_dns_enabled, true, 'the SDK\'s default KMS host resolves to the endpoint')
  t.equal(iface.subnet_ids, '${var.endpoint_subnet_ids != null ? var.endpoint_subnet_ids : var.private_subnet_ids}', 'in the private subnets')
  const ingress = res(m, 'aws_vpc_security_group_ingress_rule', 'endpoints_from_tasks')
  t.same([ingress.from_port, ingress.to_port, ingress.ip_protocol, ingress.referenced_security_group_id], [443, 443, 'tcp', '${aws_security_group.tasks.id}'], '443 from the tasks\' security group')
})

t.test('monitoring: with signer = "kms", alarms on KMS throttles, KMS failures and the RSA request quota', async (t) => {
  const throttles = res(monitoring, 'aws_cloudwatch_metric_alarm', 'kms_throttles')
  t.same([throttles.namespace, throttles.metric_name, throttles.statistic], ['${local.ns}', 'pixproxy_errors_total', 'Sum'])
  t.equal(throttles.dimensions, '${merge(local.service_dimension, { code = "PIXPROXY_ERR_KMS_THROTTLED" })}')
  t.ok(Object.values(Errors).some((e) => e.code === 'PIXPROXY_ERR_KMS_THROTTLED'), 'a code the proxy has')
  const byCode = (service.locals.cloudwatch_agent_config.logs.metrics_collected.prometheus.emf_processor.metric_declaration as Hcl[])
    .find((d) => JSON.stringify(d.dimensions) === JSON.stringify([['service', 'code']]))
  t.ok(byCode?.metric_selectors.includes('^pixproxy_errors_total$'), 'pixproxy_errors_total reaches CloudWatch by code')
  const errors = res(monitoring, 'aws_cloudwatch_metric_alarm', 'kms_errors')
  t.equal(errors.dimensions, '${merge(local.service_dimension, { error_class = "kms" })}')
  const relabels = service.locals.prometheus_scrape_config.scrape_configs[0].metric_relabel_configs as Hcl[]
  const kmsRelabel = relabels.find((r) => r.replacement === 'kms')
  const re = new RegExp(`^${kmsRelabel?.regex as string}$`)
  for (const e of Object.values(Errors)) t.equal(re.test(e.code), e.code.startsWith('PIXPROXY_ERR_KMS_'), `${e.code} ${e.code.startsWith('PIXPROXY_ERR_KMS_') ? 'is' : 'is not'} a KMS error`)
  const classDecl = (service.locals.cloudwatch_agent_config.logs.metrics_collected.prometheus.emf_processor.metric_declaration as Hcl[]).find((d) => (d.source_labels as string[]).includes('error_class'))
  t.equal(classDecl?.label_matcher, '^${var.name};(hsm|kms)$', 'the kms class reaches CloudWatch too')
  const quota = res(monitoring, 'aws_cloudwatch_metric_alarm', 'kms_rsa_quota_usage')
  const q = quota.metric_query as Hcl[]
  const calls = one(q.find((x) => x.id === 'calls'), 'metric')
  t.same([calls.namespace, calls.metric_name, calls.stat, calls.period], ['AWS/Usage', 'CallCount', 'Sum', 60])
  t.same(calls.dimensions, { Service: 'KMS', Type: 'API', Resource: 'CryptographicOperationsRsa', Class: 'None' })
  t.equal(q.find((x) => x.return_data === true)?.expression, '100 * (calls / 60) / SERVICE_QUOTA(calls)', 'requests per second against the applied quota, in percent')
  const main = await readFile(join(TF_ROOT, 'modules/monitoring/main.tf'), 'utf8')
  t.match(main, /https:\/\/docs\.aws\.amazon\.com\/kms\/latest\/developerguide\/requests-per-second\.html/, 'the quota\'s source is cited')
  t.match(main, /https:\/\/docs\.aws\.amazon\.com\/AmazonCloudWatch\/latest\/monitoring\/CloudWatch-Usage-Metrics\.html/, 'the usage metric\'s source is cited')
  const dash = res(monitoring, 'aws_cloudwatch_dashboard', 'this')
  for (const a of ['kms_throttles', 'kms_errors', 'kms_rsa_quota_usage', 'kms_sign_latency_p99', 'hsm_errors', 'cloudhsm_unhealthy']) {
    t.match(dash.dashboard_body, `aws_cloudwatch_metric_alarm.${a}[*].arn`, `the dashboard shows ${a} when it exists`)
    t.match(monitoring.outputs.alarm_arns.value, `aws_cloudwatch_metric_alarm.${a} :`, `alarm_arns has ${a} when it exists`)
  }
  t.equal(mod(EXAMPLE).modules.monitoring.hsm_cluster_id, '${local.hsm ? module.hsm[0].cluster_id : null}')
  // The signer's widget: the chosen list (an object indexed by the choice: the two lists have no common type).
  t.match(dash.dashboard_body, /metrics = local\.signer_widget_metrics\[var\.signer\]/)
  const widget = monitoring.locals.signer_widget_metrics as Record<Signer, unknown[][]>
  t.same(Object.keys(widget).sort(), [...SIGNERS].sort())
  t.ok(JSON.stringify(widget.kms).includes('CryptographicOperationsRsa') && JSON.stringify(widget.kms).includes('PIXPROXY_ERR_KMS_THROTTLED'), 'KMS: quota usage and throttles')
  t.ok(JSON.stringify(widget.cloudhsm).includes('HsmUnhealthy') && !JSON.stringify(widget.kms).includes('CloudHSM'), 'CloudHSM health only with cloudhsm')
})

t.test('monitoring: with signer = "kms", an alarm on the p99 of the proxy\'s KMS Sign calls, from the EMF samples it writes', async (t) => {
  const a = res(monitoring, 'aws_cloudwatch_metric_alarm', 'kms_sign_latency_p99')
  t.equal(a.count, '${local.kms ? 1 : 0}', 'only with signer = "kms"')
  t.equal(a.namespace, '${local.ns}')
  t.equal(emfName(a.metric_name), EMF_KMS_SIGN_LATENCY, 'the name the proxy writes (plugins/emf.ts)')
  t.equal(a.dimensions, '${local.service_dimension}', 'by service alone, as the proxy writes it')
  t.same([a.extended_statistic, a.statistic, a.period, a.comparison_operator], ['p99', undefined, 60, 'GreaterThanThreshold'], 'a percentile of every call\'s sample, per minute')
  t.equal(a.threshold, '${var.thresholds.kms_sign_p99_ms}')
  t.match(monitoring.variables.thresholds.type, /kms_sign_p99_ms\s*=\s*optional\(number, 250\)/, 'default 250 ms')
  t.same([a.evaluation_periods, a.datapoints_to_alarm, a.treat_missing_data], [5, 3, 'notBreaching'], 'a sustained slowness, no alarm when nothing signs')
  t.match(a.alarm_description, /Runbook: docs\/operations\.md#alarms/)
  // The knee the description and the default are set against: 150 signs/s per task through the calls in flight.
  t.equal(KMS_SIGNS_IN_FLIGHT, 63)
  t.match(a.alarm_description, /about 420 ms a task's 63 calls in flight no longer carry 150 signs\/s/)
  t.match(monitoring.outputs.alarm_arns.value, 'aws_cloudwatch_metric_alarm.kms_sign_latency_p99 :')
  t.ok(JSON.stringify(monitoring.locals.signer_widget_metrics.kms).includes('${local.m.kms_sign_latency}'), 'on the KMS widget')
  const ops = await readFile(join(REPO, 'docs/operations.md'), 'utf8')
  t.match(ops, /^\| \*\*KMS Sign latency\*\* \(`signer = "kms"`\) \|/m, 'a row in docs/operations.md\'s alarm table')
})

t.test('config: with signer = "kms" the environment and SSM are what the proxy needs, and loadConfig accepts them', async (t) => {
  const ssm = configParameters('kms')
  const env = Object.keys(kmsEnv).filter((k) => k.startsWith('PIXPROXY_'))
  const inputs = { config_ssm_path: SSM_PATH, audit_stream_names: { spi: 'pix-proxy-audit-spi', dict: 'pix-proxy-audit-dict' }, name: 'pix-proxy', 'local.metric_namespace': 'PixProxy/pix-proxy', signing_kms_key_id: 'arn:aws:kms:sa-east-1:111122223333:alias/pix-proxy-signing' }
  const source: Record<string, string> = {}
  for (const k of env) source[k] = String(evaluate(service, kmsEnv[k], inputs))
  const pem = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n'
  const samples: Record<string, string> = {
    PIXPROXY_ISPB: '12345678',
    PIXPROXY_DICT_URL: 'https://dict-h.pi.rsfn.net.br:16522',
    PIXPROXY_SPI_URL: 'https://icom-h.pi.rsfn.net.br:16522',
    PIXPROXY_TLS_KEY_SECRET_ID: 'arn:aws:secretsmanager:sa-east-1:111122223333:secret:pix-proxy/tls-client-key-AbCdEf',
    PIXPROXY_INBOUND_CLIENT_ALLOWLIST: 'AA:'.repeat(31) + 'AA'
  }
  for (const k of ssm.keys()) source[k] = k.endsWith('_FILE') ? pem : samples[k] ?? ''
  const c = loadConfig(source)
  t.equal(c.hsm, null, 'no HSM at all')
  t.equal(c.signing.kmsKeyId, 'arn:aws:kms:sa-east-1:111122223333:alias/pix-proxy-signing')
})

// ---------------------------------------------------------------------------------------------------------------
// The inbound Open Finance gateway (issue 17)
// ---------------------------------------------------------------------------------------------------------------

const gwEnv: Record<string, string> = gateway.locals.environment
const gwSecrets: Record<string, string> = gateway.locals.secrets
const gwContainer: Hcl = (gateway.locals.container_definitions as Hcl[])[0]

t.test('gateway: optional (enable_gateway, off by default), with the HSM signer, in the proxy\'s cluster', async (t) => {
  const ex = mod(EXAMPLE)
  t.same([ex.variables.enable_gateway.type, ex.variables.enable_gateway.default], ['${bool}', false])
  t.equal(ex.modules.gateway.count, '${var.enable_gateway ? 1 : 0}')
  t.equal(ex.modules.data_lake.enable_gateway, '${var.enable_gateway}', 'its audit stream and table with it')
  t.equal(lake.variables.enable_gateway.default, false)
  const pre = one(res(ex, 'terraform_data', 'pem_files'), 'lifecycle').precondition as Hcl[]
  t.ok(pre.some((p) => p.condition === '${!var.enable_gateway || local.hsm}'), 'refused with signer = "kms": its server key is in the HSM')
  t.same([ex.modules.gateway.cluster_arn, ex.modules.gateway.image], ['${module.service.cluster_arn}', '${var.image}'], 'the proxy\'s cluster and image')
  t.same(gwContainer.command, ['gateway'], 'its own entry point')
  t.same([ex.modules.gateway.hsm_ip_addresses, ex.modules.gateway.hsm_security_group_id], ['${module.hsm[0].hsm_ip_addresses}', '${module.hsm[0].security_group_id}'])
  t.same([ex.modules.gateway.audit_stream_name, ex.modules.gateway.audit_stream_arn], ['${module.data_lake.gateway_firehose_stream_name}', '${module.data_lake.gateway_firehose_stream_arn}'])
})

t.test('gateway: NLB TCP passthrough 443 -> 8443, HTTP health check GET /readyz on 8081, Fargate service with autoscaling', async (t) => {
  const listener = res(gateway, 'aws_lb_listener', 'this')
  t.equal(listener.protocol, 'TCP', 'TLS passes through: the gateway terminates mutual TLS with its HSM key')
  t.notOk(listener.certificate_arn)
  t.equal(evaluate(gateway, listener.port), 443)
  t.equal(res(gateway, 'aws_lb', 'this').load_balancer_type, 'network')
  const tg = res(gateway, 'aws_lb_target_group', 'this')
  t.same([tg.protocol, tg.target_type, evaluate(gateway, tg.port)], ['TCP', 'ip', 8443])
  const hc = one(tg, 'health_check')
  t.same([hc.protocol, hc.path, hc.matcher, evaluate(gateway, hc.port)], ['HTTP', '/readyz', '200', '8081'], 'HTTP readiness on the operations port')
  const svc = res(ecsService, 'aws_ecs_service', 'this')
  t.equal(svc.launch_type, 'FARGATE')
  t.equal(through(gateway, svc.cluster), '${var.cluster_arn}')
  t.ok(one(svc, 'lifecycle').ignore_changes.includes('${desired_count}'), 'autoscaling owns desired_count')
  t.same([one(svc, 'deployment_circuit_breaker').enable, one(svc, 'deployment_circuit_breaker').rollback], [true, true])
  t.equal(one(svc, 'network_configuration').assign_public_ip, false)
  t.same([through(gateway, svc.load_balancer[0].container_port), through(gateway, svc.load_balancer[0].container_name)], ['${var.container_port}', '${local.container}'])
  t.same([through(gateway, one(svc, 'network_configuration').subnets), through(gateway, one(svc, 'network_configuration').security_groups)], ['${var.private_subnet_ids}', ['${aws_security_group.tasks.id}']])
  const target = res(ecsService, 'aws_appautoscaling_target', 'this')
  t.equal(target.resource_id, 'service/${var.cluster_name}/${aws_ecs_service.this.name}')
  t.same([through(gateway, '${var.cluster_name}'), through(gateway, '${var.autoscaling}')], ['${var.cluster_name}', '${var.autoscaling}'])
  t.same(Object.keys(gateway.resources).filter((k) => k.startsWith('aws_appautoscaling') || k === 'aws_ecs_service'), [], 'no scaling or service of its own beside the module\'s')
  const cpu = one(res(ecsService, 'aws_appautoscaling_policy', 'cpu'), 'target_tracking_scaling_policy_configuration')
  t.equal(one(cpu, 'predefined_metric_specification').predefined_metric_type, 'ECSServiceAverageCPUUtilization')
  t.match(gateway.variables.autoscaling.validation[0].condition, /min_capacity >= 2/)
  // The operations port: from the NLB's security group only, no listener for it, not mapped.
  t.same(gwContainer.portMappings, [{ containerPort: '${var.container_port}', protocol: 'tcp' }])
  for (const [type, name] of [['aws_vpc_security_group_egress_rule', 'nlb_to_tasks'], ['aws_vpc_security_group_ingress_rule', 'tasks_from_nlb']] as const) {
    const r = res(gateway, type, name)
    t.equal(r.for_each, '${toset([tostring(var.container_port), tostring(var.ops_port)])}', `${name}: the TLS port and the operations port`)
    t.match(JSON.stringify([r.security_group_id, r.referenced_security_group_id]), /aws_security_group\.nlb\.id/, `${name}: NLB <-> tasks only`)
  }
  t.match(gateway.variables.client_cidrs.validation[0].condition, /!contains\(var\.client_cidrs, "0\.0\.0\.0\/0"\)/)
})

t.test('gateway: its settings are exactly the PIXGW_* names it reads and the proxy\'s HSM settings', async (t) => {
  t.equal(gwContainer.environment, '${[for k in sort(keys(local.environment)) : { name = k, value = local.environment[k] }]}')
  t.equal(gwContainer.secrets, '${[for k in sort(keys(local.secrets)) : { name = k, valueFrom = local.secrets[k] }]}')
  const names = [...Object.keys(gwEnv), ...Object.keys(gwSecrets)].sort()
  t.same(names, [
    'CLOUDHSM_CUSTOMER_CA', 'CLOUDHSM_HSM_IPS',
    'PIXGW_AUDIT_FIREHOSE_STREAM', 'PIXGW_AUDIT_SINK', 'PIXGW_AUDIT_SPOOL_DIR', 'PIXGW_AUDIT_SPOOL_SHARED', 'PIXGW_BACKEND_URL', 'PIXGW_CRLS', 'PIXGW_LISTEN_HOST', 'PIXGW_LISTEN_PORT',
    'PIXGW_OPS_LISTEN_HOST', 'PIXGW_OPS_LISTEN_PORT', 'PIXGW_ROUTES', 'PIXGW_SERVER_CERT_FILE', 'PIXGW_SERVER_KEY_LABEL', 'PIXGW_TRUSTSTORE',
    'PIXPROXY_HSM_MODULE_PATH', 'PIXPROXY_HSM_PIN_SECRET_ID', 'PIXPROXY_HSM_TOKEN_LABEL'
  ])
  t.same([evaluate(gateway, gwEnv.PIXGW_LISTEN_PORT), evaluate(gateway, gwEnv.PIXGW_OPS_LISTEN_PORT)], ['8443', '8081'])
  for (const k of ['PIXPROXY_HSM_MODULE_PATH', 'PIXPROXY_HSM_TOKEN_LABEL', 'PIXPROXY_HSM_PIN_SECRET_ID']) t.ok((CONFIG_KEYS as string[]).includes(k), `${k} is the proxy's own setting`)
  t.equal(gwEnv.PIXPROXY_HSM_MODULE_PATH, proxyEnv.PIXPROXY_HSM_MODULE_PATH, 'the same PKCS#11 module as the proxy')
  t.equal(gwEnv.PIXGW_SERVER_KEY_LABEL, '${var.server_key_label}')
  t.equal(gwEnv.PIXPROXY_HSM_PIN_SECRET_ID, '${var.hsm_pin_secret_arn}')
  t.equal(gwSecrets.PIXGW_SERVER_CERT_FILE, '${aws_ssm_parameter.server_cert.arn}', 'the certificate (PEM) as a container secret')
  t.match(res(gateway, 'aws_ssm_parameter', 'server_cert').name, /^\$\{var\.infra_ssm_path\}/, 'outside the proxy\'s settings path')
  const inputs = { 'aws_s3_bucket.truststore.bucket': 'bank-truststore', truststore_object_name: 'ca-bundle.pem' }
  t.equal(evaluate(gateway, gwEnv.PIXGW_TRUSTSTORE, inputs), 's3://bank-truststore/truststore/ca-bundle.pem')
  t.equal(gwEnv.PIXGW_CRLS, '${join(",", [for c in var.crl_object_names : "s3://${aws_s3_bucket.truststore.bucket}/${local.crl_prefix}${c}"])}', 'comma-separated s3:// URIs under crls/')
  t.equal(gwEnv.PIXGW_AUDIT_FIREHOSE_STREAM, '${var.audit_stream_name}')
  t.equal(gwEnv.PIXGW_BACKEND_URL, '${var.backend_url}')
})

/**
 * What a gateway task would load: the task definition's environment evaluated with representative inputs, and its
 * container secrets (SSM parameters ECS resolves at start) with placeholder values of the right kind.
 */
function gatewayTaskSource (): Record<string, string> {
  const inputs = {
    'aws_s3_bucket.truststore.bucket': 'bank-truststore',
    crl_object_names: ['ac-raiz-v10.crl', 'ac-intermediaria.crl'],
    server_key_label: 'gw-tls',
    backend_url: 'https://abc123.execute-api.sa-east-1.amazonaws.com',
    audit_stream_name: 'pix-proxy-audit-gateway',
    hsm_pin_secret_arn: 'arn:aws:secretsmanager:sa-east-1:111122223333:secret:pix-proxy/hsm-pin-AbCdEf',
    hsm_ip_addresses: ['10.0.1.10']
  }
  const source: Record<string, string> = {}
  for (const [k, v] of Object.entries(gwEnv)) source[k] = String(evaluate(gateway, v, inputs))
  const pem = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n'
  // Every container secret of the gateway is a PEM parameter (the server certificate, the CloudHSM CA).
  for (const k of Object.keys(gwSecrets)) source[k] = pem
  return source
}

t.test('gateway: loadGatewayConfig accepts what the task definition gives it (environment + container secrets)', async (t) => {
  const source = gatewayTaskSource()
  // The task's settings as they are: the truststore and CRLs as s3:// objects of the truststore bucket.
  const c = loadGatewayConfig(source)
  t.match(c.truststoreFile, /^s3:\/\/[^/]+\/truststore\//, 'the truststore from its bucket prefix')
  t.ok(c.crlFiles.length > 0 && c.crlFiles.every((f) => /^s3:\/\/[^/]+\/crls\//.test(f)), 'every CRL from the crls/ prefix')
  t.equal(c.s3ForcePathStyle, false, 'S3 addressed virtual-hosted style, as AWS wants')
  t.same(c.listen, { host: '0.0.0.0', port: 8443 }, 'the mTLS listener on the task\'s address, the NLB target port')
  t.same(c.ops, { host: '0.0.0.0', port: 8081 }, 'the operations listener on the task\'s address, for the NLB\'s HTTP check')
  t.same(c.serverKey, { kind: 'hsm', label: 'gw-tls', modulePath: '/opt/cloudhsm/lib/libcloudhsm_pkcs11.so', tokenLabel: 'hsm1', pinFile: null, pinSecretId: source.PIXPROXY_HSM_PIN_SECRET_ID }, 'the server key in the HSM, its PIN in Secrets Manager')
  t.match(c.serverCertFile, /^-----BEGIN CERTIFICATE-----/, 'the certificate as the PEM text ECS puts in the variable')
  t.same(c.routes.map((r) => r.text), ['GET /open-banking/*', 'POST /open-banking/*', 'PUT /open-banking/*', 'PATCH /open-banking/*', 'DELETE /open-banking/*'], 'the default routes: the Open Finance APIs')
  t.equal(c.backend.url, 'https://abc123.execute-api.sa-east-1.amazonaws.com')
  t.equal(c.auditFirehoseStream, 'pix-proxy-audit-gateway')
  t.equal(c.audit.sink, 'firehose', 'rows leave the task through Firehose, never only its local Parquet')
  t.same([c.audit.spoolShared, c.audit.spoolDir], [true, '/var/spool/pix-proxy'], 'the spool on the gateway\'s EFS access point, shared by its tasks (slots)')

  // The routes variable's validation accepts what the gateway parses, and its default parses.
  const routesVar = gateway.variables.routes
  t.same([routesVar.type, routesVar.default.length], ['${list(string)}', 5])
  const hcl = /can\(regex\("(.+)", r\)\)/.exec(routesVar.validation[0].condition as string)
  t.ok(hcl !== null, 'the validation is a regex on each route')
  const re = new RegExp((hcl as RegExpExecArray)[1]?.replaceAll('\\\\', '\\') as string)
  for (const r of routesVar.default as string[]) t.ok(re.test(r), `${r} passes the variable's validation`)
  for (const r of ['GET open-banking', 'GET /a,POST /b', 'FETCH /x', 'GET /a?b=1']) t.notOk(re.test(r), `${r} is refused by it`)

  // The container's own health check: the image's HEALTHCHECK reads PIXPROXY_OPS_LISTEN_PORT, which the gateway
  // does not have, so the task names the gateway's operations listener by URL.
  const hc = gwContainer.healthCheck
  const cmd = (hc.command as string[]).map((x) => String(evaluate(gateway, x)))
  t.same(cmd, ['CMD', 'node', '/app/docker/healthcheck.mjs', `http://127.0.0.1:${c.ops.port}/healthz`], 'GET /healthz on the gateway\'s operations port')
  t.notOk('PIXPROXY_OPS_LISTEN_PORT' in gwEnv, 'no proxy ops port in the gateway\'s environment for the image\'s check to use')
})

t.test('gateway: truststore bucket (versioned, encrypted, public access blocked, TLS only), least-privilege IAM', async (t) => {
  t.equal(one(res(gateway, 'aws_s3_bucket_versioning', 'truststore'), 'versioning_configuration').status, 'Enabled')
  const sse = one(one(res(gateway, 'aws_s3_bucket_server_side_encryption_configuration', 'truststore'), 'rule'), 'apply_server_side_encryption_by_default')
  t.same([sse.sse_algorithm, sse.kms_master_key_id], ['aws:kms', '${var.kms_key_arn}'])
  const pab = res(gateway, 'aws_s3_bucket_public_access_block', 'truststore')
  for (const k of ['block_public_acls', 'block_public_policy', 'ignore_public_acls', 'restrict_public_buckets']) t.equal(pab[k], true, k)
  const bucketPolicy = gateway.data.aws_iam_policy_document?.truststore_bucket.statement as Hcl[]
  t.ok(bucketPolicy.some((s) => s.effect === 'Deny' && s.condition?.[0]?.variable === 'aws:SecureTransport'), 'TLS only')
  const task = statementsOf(gateway, gateway.data.aws_iam_policy_document?.task)
  t.same(task.flatMap((s) => s.actions as string[]).sort(), ['elasticfilesystem:ClientMount', 'elasticfilesystem:ClientWrite', 'firehose:PutRecord', 'firehose:PutRecordBatch', 'kms:Decrypt', 's3:GetObject', 's3:GetObjectVersion', 'secretsmanager:GetSecretValue'])
  const s3 = task.find((s) => (s.actions as string[]).includes('s3:GetObject'))
  t.same(s3.resources, ['${local.bucket_arn}/${local.truststore_prefix}*', '${local.bucket_arn}/${local.crl_prefix}*'], 'the truststore and CRL prefixes only')
  t.same([gateway.locals.truststore_prefix, gateway.locals.crl_prefix], ['truststore/', 'crls/'])
  t.same(task.find((s) => (s.actions as string[]).includes('firehose:PutRecordBatch')).resources, ['${var.audit_stream_arn}'], 'its own audit stream only')
  t.same(task.find((s) => (s.actions as string[]).includes('secretsmanager:GetSecretValue')).resources, ['${var.hsm_pin_secret_arn}'])
  t.equal(task.find((s) => (s.actions as string[]).includes('kms:Decrypt')).condition[0].variable, 'kms:ViaService')
  const exec = ecsService.data.aws_iam_policy_document?.execution.statement as Hcl[]
  t.equal(through(gateway, exec.find((s) => s.sid === 'ContainerSecrets')?.resources), '${values(local.secrets)}')
  t.equal(exec.find((s) => s.sid === 'ContainerLogs')?.resources, '${[for arn in var.log_group_arns : "${arn}:log-stream:*"]}', 'the log streams of the given log groups')
  t.same([through(gateway, '${var.log_group_arns}'), through(service, '${var.log_group_arns}')],
    [['${aws_cloudwatch_log_group.gateway.arn}'], ['${aws_cloudwatch_log_group.proxy.arn}', '${aws_cloudwatch_log_group.sidecars.arn}']], 'each writes its own log groups only')
  // The proxy's task role gets nothing of the gateway's stream: data_lake's proxy outputs stay spi and dict.
  t.match(lake.outputs.firehose_stream_arns.value, /if contains\(local\.systems, k\)/)
  t.equal(lake.outputs.gateway_firehose_stream_name.value, '${try(aws_kinesis_firehose_delivery_stream.audit["gateway"].name, null)}')
  t.equal(String(evaluate(lake, res(lake, 'aws_kinesis_firehose_delivery_stream', 'audit').name, { 'each.key': 'gateway', name: 'pix-proxy' })), 'pix-proxy-audit-gateway', 'named like the proxy\'s streams')
  const gwCols = lake.locals.gateway_audit_columns as Array<{ name: string, type: string, comment: string }>
  t.ok(gwCols.length > 10 && gwCols[0]?.name === 'id' && gwCols.some((c) => c.name === 'client_thumbprint'), 'the gateway table has its own columns')
  // As for spi and dict: the Glue table reads the gateway's Firehose JSON by name, so it must be GATEWAY_COLUMNS.
  t.same(gwCols.map((c) => c.name), GATEWAY_COLUMNS.map((c) => c.name), 'gateway columns: names in order equal GATEWAY_COLUMNS')
  t.same(gwCols.map((c) => c.type), GATEWAY_COLUMNS.map((c) => c.type), 'gateway columns: Glue types equal the schema types')
  t.same(gwCols.map((c) => c.comment), GATEWAY_COLUMNS.map((c) => c.description), 'gateway columns: comments are the schema descriptions')
  for (const c of gwCols) t.ok(['string', 'timestamp', 'int', 'bigint', 'double', 'boolean'].includes(c.type), `${c.name}: ${c.type} is a Hive type`)
})

t.test('gateway: its audit spool on an EFS file system of its own, shared by its tasks (slots), as the proxy\'s', async (t) => {
  const td = res(gateway, 'aws_ecs_task_definition', 'this')
  t.same((td.volume as Hcl[]).map((v) => v.name), ['audit-spool'], 'one static volume, the spool (the scratch volumes are the dynamic ones)')
  const efsVolume = (td.volume as Hcl[])[0]
  t.equal(td.dynamic.volume[0].for_each, '${local.scratch_volumes}')
  // Mounted as the gateway's own efs_spool call says: its file system and access point, TLS and IAM authorisation.
  const efs = one(efsVolume, 'efs_volume_configuration')
  t.equal(taskVolume(efs.transit_encryption), 'ENABLED')
  t.equal(taskVolume(efs.file_system_id), '${aws_efs_file_system.this.id}', 'the file system of the gateway\'s own spool')
  const auth = one(efs, 'authorization_config')
  t.equal(taskVolume(auth.access_point_id), '${aws_efs_access_point.this.id}')
  t.equal(taskVolume(auth.iam), 'ENABLED', 'mounts authorised by the task role')
  const mounts = evaluateMounts(gwContainer.mountPoints, gateway)
  const spoolDir = evaluate(gateway, gwEnv.PIXGW_AUDIT_SPOOL_DIR)
  t.equal(spoolDir, '/var/spool/pix-proxy')
  t.ok(mounts.some((mp) => mp.sourceVolume === 'audit-spool' && mp.containerPath === spoolDir && mp.readOnly === false), `the spool (${String(spoolDir)}) is the EFS mount`)
  for (const [volume, path] of Object.entries<string>(gateway.locals.scratch_volumes)) {
    t.ok(mounts.some((mp) => mp.sourceVolume === volume && mp.containerPath === path), `${path} is writable (${volume})`)
    t.not(path, spoolDir, `the spool is not on the task-local ${path}`)
  }
  t.equal(gwEnv.PIXGW_AUDIT_SPOOL_SHARED, 'true', 'tasks share the access point and claim slots')
  t.equal(gwEnv.PIXGW_AUDIT_SINK, 'firehose')
  // The access point's owner is the container's user: the read-only container writes the spool as 10001.
  t.same([gwContainer.user, gwContainer.readonlyRootFilesystem], ['10001:10001', true])
  // The spool's resources are efs_spool's (asserted with it above): here they are read with what the gateway gives it.
  const spool = spoolInputs(gateway)
  const ap = res(efsSpool, 'aws_efs_access_point', 'this')
  t.same([evaluate(efsSpool, one(ap, 'posix_user').uid, spool), evaluate(efsSpool, one(ap, 'posix_user').gid, spool)], [10001, 10001])
  const ci = one(one(ap, 'root_directory'), 'creation_info')
  t.same([evaluate(efsSpool, ci.owner_uid, spool), evaluate(efsSpool, ci.owner_gid, spool)], [10001, 10001])
  const fs = res(efsSpool, 'aws_efs_file_system', 'this')
  t.same([fs.encrypted, fs.kms_key_id, spoolCall(gateway).kms_key_arn], [true, '${var.kms_key_arn}', '${var.efs_kms_key_arn}'], 'encrypted, with the given key (or the AWS managed one)')
  t.same([gateway.variables.efs_kms_key_arn.type, gateway.variables.efs_kms_key_arn.default], ['${string}', null])
  t.not(evaluate(efsSpool, fs.creation_token, spool), evaluate(efsSpool, fs.creation_token, spoolInputs(service)), 'not the proxy\'s file system')
  t.equal(res(efsSpool, 'aws_efs_mount_target', 'this').count, '${length(var.subnet_ids)}')
  t.equal(spoolCall(gateway).subnet_ids, '${var.private_subnet_ids}', 'a mount target in every task subnet')
  // NFS from the gateway tasks only, and the tasks may reach it.
  t.equal(spoolCall(gateway).client_security_group_id, '${aws_security_group.tasks.id}', 'the gateway tasks are the spool\'s only NFS clients')
  // IAM: the task role mounts and writes through the access point only; the file system policy says the same, TLS only.
  const task = statementsOf(gateway, gateway.data.aws_iam_policy_document?.task)
  const mount = task.find((s) => (s.actions as string[]).includes('elasticfilesystem:ClientMount'))
  t.same(mount.actions, ['elasticfilesystem:ClientMount', 'elasticfilesystem:ClientWrite'], 'no root access, no other action')
  t.same(mount.resources, ['${aws_efs_file_system.this.arn}'])
  t.same([mount.condition[0].variable, mount.condition[0].values], ['elasticfilesystem:AccessPointArn', ['${aws_efs_access_point.this.arn}']], 'EFS only through the access point')
  const fsPolicy = efsSpool.data.aws_iam_policy_document?.file_system.statement as Hcl[]
  t.ok(fsPolicy.some((s) => s.effect === 'Deny' && s.condition?.[0]?.variable === 'aws:SecureTransport'), 'TLS only')
  const allow = fsPolicy.find((s) => s.effect !== 'Deny')
  t.same([allow?.principals[0].identifiers, allow?.condition[0].values, spoolCall(gateway).client_role_arn], [['${var.client_role_arn}'], ['${aws_efs_access_point.this.arn}'], '${module.ecs_service.task_role_arn}'], 'the gateway\'s task role, through the access point')
  // The example encrypts it with the audit key, as the proxy's.
  const ex = mod(EXAMPLE)
  t.equal(ex.modules.gateway.efs_kms_key_arn, ex.modules.service.efs_kms_key_arn)
  // No trace of the old scratch-volume spool.
  t.notMatch(await readFile(join(TF_ROOT, 'modules/gateway/main.tf'), 'utf8'), /\/tmp\/audit-spool|lost with it/, 'the spool is no longer task-local')
})

t.test('gateway: the private API Gateway\'s execute-api endpoint, reachable from the gateway only, and a resource policy restricting the API to it', async (t) => {
  const ep = res(gateway, 'aws_vpc_endpoint', 'execute_api')
  t.equal(ep.service_name, 'com.amazonaws.${local.region}.execute-api')
  t.same([ep.vpc_endpoint_type, ep.private_dns_enabled], ['Interface', true])
  t.same(ep.security_group_ids, ['${aws_security_group.execute_api.id}'])
  const ingress = res(gateway, 'aws_vpc_security_group_ingress_rule', 'execute_api_from_tasks')
  t.same([ingress.security_group_id, ingress.referenced_security_group_id, ingress.from_port], ['${aws_security_group.execute_api.id}', '${aws_security_group.tasks.id}', 443])
  const policy = gateway.data.aws_iam_policy_document?.private_api.statement as Hcl[]
  const deny = policy.find((s) => s.effect === 'Deny')
  t.same([deny?.actions, deny?.resources], [['execute-api:Invoke'], ['execute-api:/*']])
  t.same([deny?.condition[0].test, deny?.condition[0].variable, deny?.condition[0].values], ['StringNotEquals', 'aws:SourceVpce', ['${aws_vpc_endpoint.execute_api.id}']], 'any other endpoint is refused')
  t.equal(gateway.outputs.private_api_resource_policy_json.value, '${data.aws_iam_policy_document.private_api.json}')
  // The HSM client rules, like the proxy's.
  for (const [type, name, attr] of [['aws_vpc_security_group_ingress_rule', 'hsm_from_tasks', 'security_group_id'], ['aws_vpc_security_group_egress_rule', 'tasks_to_hsm', 'referenced_security_group_id']] as const) {
    const r = res(gateway, type, name)
    t.equal(r[attr], '${var.hsm_security_group_id}')
    t.same([evaluate(gateway, r.from_port), evaluate(gateway, r.to_port)], [2223, 2225])
  }
})
