//! The dependency graph of service instances (`service@node`) and its deployment order.
//!
//! Pure: built from a validated `Homelab`, no I/O. Edges point from a dependent to what it
//! depends on (`homeassistant@chelsty-ha -> mosquitto@chelsty-infra`); the deployment order
//! is a topological order with dependencies first, ties broken by name so it is stable.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{self, Write};

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::model::{Homelab, Instance, NodeName};

pub struct DeployGraph {
    graph: DiGraph<Instance, ()>,
    index: BTreeMap<Instance, NodeIndex>,
    display: BTreeMap<NodeName, String>,
}

/// A dependency cycle, as a path that starts and ends at the same instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    pub path: Vec<Instance>,
}

impl DeployGraph {
    pub fn build(lab: &Homelab) -> Result<DeployGraph, Cycle> {
        let mut graph = DiGraph::new();
        let mut index = BTreeMap::new();
        for inst in lab.instances.keys() {
            index.insert(inst.clone(), graph.add_node(inst.clone()));
        }
        for (inst, deps) in &lab.instances {
            for dep in deps {
                if let Some(&to) = index.get(dep) {
                    graph.add_edge(index[inst], to, ());
                }
            }
        }
        let display = lab.nodes.values().map(|n| (n.id.clone(), n.display_name.clone())).collect();
        let g = DeployGraph { graph, index, display };
        match g.find_cycle() {
            Some(path) => Err(Cycle { path }),
            None => Ok(g),
        }
    }

    fn find_cycle(&self) -> Option<Vec<Instance>> {
        let mut sccs: Vec<Vec<NodeIndex>> = petgraph::algo::tarjan_scc(&self.graph)
            .into_iter()
            .filter(|c| c.len() > 1 || self.graph.contains_edge(c[0], c[0]))
            .collect();
        for c in &mut sccs {
            c.sort_by(|a, b| self.graph[*a].cmp(&self.graph[*b]));
        }
        sccs.sort_by(|a, b| self.graph[a[0]].cmp(&self.graph[b[0]]));
        let scc = sccs.first()?;
        let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
        let start = scc[0];
        // Shortest way back to `start` inside the component: a readable cycle.
        let mut prev: BTreeMap<NodeIndex, NodeIndex> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(at) = queue.pop_front() {
            let mut next: Vec<NodeIndex> =
                self.graph.neighbors(at).filter(|n| members.contains(n)).collect();
            next.sort_by(|a, b| self.graph[*a].cmp(&self.graph[*b]));
            for n in next {
                if n == start {
                    let mut path = vec![self.graph[start].clone()];
                    let mut cur = at;
                    let mut rev = Vec::new();
                    while cur != start {
                        rev.push(self.graph[cur].clone());
                        cur = prev[&cur];
                    }
                    path.extend(rev.into_iter().rev());
                    path.push(self.graph[start].clone());
                    return Some(path);
                }
                if let std::collections::btree_map::Entry::Vacant(e) = prev.entry(n) {
                    e.insert(at);
                    queue.push_back(n);
                }
            }
        }
        None
    }

    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.index.keys()
    }

    /// What `inst` depends on, sorted.
    pub fn dependencies(&self, inst: &Instance) -> Vec<&Instance> {
        let Some(&i) = self.index.get(inst) else { return Vec::new() };
        let mut out: Vec<&Instance> = self.graph.neighbors(i).map(|n| &self.graph[n]).collect();
        out.sort();
        out
    }

    /// Deployment order: every instance after all it depends on; ties by name.
    pub fn order(&self) -> Vec<Instance> {
        let mut pending: BTreeMap<NodeIndex, usize> = self
            .graph
            .node_indices()
            .map(|i| (i, self.graph.edges_directed(i, Direction::Outgoing).count()))
            .collect();
        let mut ready: BTreeSet<&Instance> =
            pending.iter().filter(|(_, n)| **n == 0).map(|(i, _)| &self.graph[*i]).collect();
        let mut out = Vec::with_capacity(self.index.len());
        while let Some(inst) = ready.pop_first() {
            out.push(inst.clone());
            let i = self.index[inst];
            for e in self.graph.edges_directed(i, Direction::Incoming) {
                let dependent = e.source();
                let left = pending.get_mut(&dependent).expect("every node is counted");
                *left -= 1;
                if *left == 0 {
                    ready.insert(&self.graph[dependent]);
                }
            }
        }
        out
    }

    /// Groups of nodes that deploy independently of each other (no dependency crosses groups).
    pub fn branches(&self) -> Vec<Vec<NodeName>> {
        let nodes: BTreeSet<&NodeName> = self.index.keys().map(|i| &i.node).collect();
        let mut parent: BTreeMap<&NodeName, &NodeName> = nodes.iter().map(|n| (*n, *n)).collect();
        fn find<'a>(p: &BTreeMap<&'a NodeName, &'a NodeName>, mut n: &'a NodeName) -> &'a NodeName {
            while p[n] != n {
                n = p[n];
            }
            n
        }
        for e in self.graph.edge_references() {
            let a = find(&parent, &self.graph[e.source()].node);
            let b = find(&parent, &self.graph[e.target()].node);
            if a != b {
                let (lo, hi) = if a < b { (a, b) } else { (b, a) };
                parent.insert(hi, lo);
            }
        }
        let mut groups: BTreeMap<&NodeName, Vec<NodeName>> = BTreeMap::new();
        for n in &nodes {
            groups.entry(find(&parent, n)).or_default().push((*n).clone());
        }
        groups.into_values().collect()
    }

    fn edges(&self) -> Vec<(&Instance, &Instance)> {
        let mut out: Vec<_> = self
            .graph
            .edge_references()
            .map(|e| (&self.graph[e.source()], &self.graph[e.target()]))
            .collect();
        out.sort();
        out
    }

    fn by_node(&self) -> BTreeMap<&NodeName, Vec<&Instance>> {
        let mut out: BTreeMap<&NodeName, Vec<&Instance>> = BTreeMap::new();
        for inst in self.index.keys() {
            out.entry(&inst.node).or_default().push(inst);
        }
        out
    }

    fn display_name(&self, node: &NodeName) -> String {
        self.display.get(node).cloned().unwrap_or_else(|| node.display_name())
    }

    pub fn write_dot<W: Write + ?Sized>(&self, w: &mut W) -> io::Result<()> {
        writeln!(w, "digraph homelab {{")?;
        writeln!(w, "  rankdir=LR;")?;
        writeln!(w, "  node [shape=box];")?;
        for (node, insts) in self.by_node() {
            writeln!(w, "  subgraph \"cluster_{node}\" {{")?;
            writeln!(w, "    label=\"{}\";", self.display_name(node))?;
            for inst in insts {
                writeln!(w, "    \"{inst}\";")?;
            }
            writeln!(w, "  }}")?;
        }
        for (from, to) in self.edges() {
            writeln!(w, "  \"{from}\" -> \"{to}\";")?;
        }
        writeln!(w, "}}")
    }

    pub fn write_mermaid<W: Write + ?Sized>(&self, w: &mut W) -> io::Result<()> {
        writeln!(w, "flowchart LR")?;
        for (node, insts) in self.by_node() {
            writeln!(
                w,
                "  subgraph {}[\"{}\"]",
                mermaid_id(node.as_str()),
                self.display_name(node)
            )?;
            for inst in insts {
                writeln!(w, "    {}[\"{inst}\"]", mermaid_id(&inst.to_string()))?;
            }
            writeln!(w, "  end")?;
        }
        for (from, to) in self.edges() {
            writeln!(w, "  {} --> {}", mermaid_id(&from.to_string()), mermaid_id(&to.to_string()))?;
        }
        Ok(())
    }

    pub fn write_text<W: Write + ?Sized>(&self, w: &mut W) -> io::Result<()> {
        writeln!(w, "deployment order (dependencies first):")?;
        let order = self.order();
        let width = order.iter().map(|i| i.to_string().len()).max().unwrap_or(0);
        for (n, inst) in order.iter().enumerate() {
            let deps = self.dependencies(inst);
            if deps.is_empty() {
                writeln!(w, "  {:>3}. {inst}", n + 1)?;
            } else {
                let deps: Vec<String> = deps.iter().map(ToString::to_string).collect();
                let shown = inst.to_string();
                writeln!(w, "  {:>3}. {shown:<width$}  after {}", n + 1, deps.join(", "))?;
            }
        }
        writeln!(w)?;
        writeln!(w, "independent branches (nodes deployed in parallel):")?;
        for group in self.branches() {
            let names: Vec<String> = group.iter().map(|n| self.display_name(n)).collect();
            writeln!(w, "  - {}", names.join(", "))?;
        }
        Ok(())
    }
}

/// Mermaid ids: kebab names map one to one (`-` to `_`, `@` to `__`), as names never hold `_`.
fn mermaid_id(s: &str) -> String {
    s.replace('@', "__").replace('-', "_")
}
