//! The Tree-of-Thought search tree of one user, kept whole for inspection.

use pulserec_core::{Rationale, RationaleSource, UserId};
use serde::{Deserialize, Serialize};

/// What the search did with a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeStatus {
    /// In the beam of its depth (expanded next, or part of the final beam at the last depth).
    Kept,
    /// Scored, but not among the best `beam_width` of its depth.
    Pruned,
    /// Same normalised text as an earlier sibling (same parent): dropped before scoring.
    Duplicate,
    /// Nothing usable was left after parsing: dropped before scoring.
    Empty,
}

/// One sampled thought.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThoughtNode {
    /// Index of the parent node in [`ThoughtTree::nodes`]; `None` for first thoughts.
    pub parent: Option<usize>,
    /// 1 for first thoughts.
    pub depth: usize,
    /// Which of its parent's children this is (`0..branching`).
    pub child: usize,
    /// The thought as parsed from the model output.
    pub text: String,
    /// The model's raw output.
    pub raw: String,
    /// Whether the output was a clean thought (false: a fallback extraction was used).
    pub parsed: bool,
    /// The scorer's score of the chain ending here (`None` for dropped nodes).
    pub score: Option<f32>,
    /// What the search did with it.
    pub status: NodeStatus,
    /// The sampling seed of this thought.
    pub seed: u64,
    /// Tokens generated for this thought.
    pub tokens: usize,
}

impl ThoughtNode {
    /// Whether the node made its depth's beam.
    pub fn kept(&self) -> bool {
        self.status == NodeStatus::Kept
    }
}

/// All nodes the search produced for one user, in the order they were generated (by depth, then
/// parent in beam order, then child index).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ThoughtTree {
    /// The user.
    pub user: UserId,
    /// Every node, dropped ones included.
    pub nodes: Vec<ThoughtNode>,
}

impl ThoughtTree {
    /// An empty tree.
    pub fn new(user: UserId) -> Self {
        Self {
            user,
            nodes: Vec::new(),
        }
    }

    /// The thoughts from the first one down to `node` (empty for `None`, the root).
    ///
    /// A node index outside the tree yields an empty chain.
    pub fn chain(&self, node: Option<usize>) -> Vec<String> {
        let mut out = Vec::new();
        let mut at = node;
        while let Some(i) = at {
            let Some(n) = self.nodes.get(i) else {
                return Vec::new();
            };
            out.push(n.text.clone());
            at = n.parent;
        }
        out.reverse();
        out
    }

    /// The chain ending at `node` as one text (thoughts joined by spaces): what is scored and
    /// what becomes the rationale.
    pub fn chain_text(&self, node: usize) -> String {
        self.chain(Some(node)).join(" ")
    }

    /// The deepest depth that has kept nodes (0 if none).
    pub fn reached_depth(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.kept())
            .map(|n| n.depth)
            .max()
            .unwrap_or(0)
    }

    /// The final beam: kept nodes at [`Self::reached_depth`], in generation order.
    pub fn final_beam(&self) -> Vec<usize> {
        let depth = self.reached_depth();
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].kept() && self.nodes[i].depth == depth)
            .collect()
    }

    /// The best node of the final beam: highest score, the earliest generated on ties.
    pub fn best(&self) -> Option<usize> {
        let mut best: Option<(usize, f32)> = None;
        for i in self.final_beam() {
            let score = self.nodes[i].score.unwrap_or(f32::NEG_INFINITY);
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((i, score));
            }
        }
        best.map(|(i, _)| i)
    }

    /// Nodes that were scored (neither duplicates nor empty).
    pub fn scored(&self) -> usize {
        self.nodes.iter().filter(|n| n.score.is_some()).count()
    }

    /// Tokens generated for the whole tree.
    pub fn tokens(&self) -> usize {
        self.nodes.iter().map(|n| n.tokens).sum()
    }

    /// The refined rationale: the best chain of the final beam, its score, and `parsed` = every
    /// thought on it parsed cleanly. A tree with no kept node gives an empty, unparsed rationale
    /// without a score.
    pub fn rationale(&self) -> Rationale {
        match self.best() {
            Some(best) => {
                let mut parsed = true;
                let mut at = Some(best);
                while let Some(i) = at {
                    parsed &= self.nodes[i].parsed;
                    at = self.nodes[i].parent;
                }
                Rationale {
                    user: self.user,
                    text: self.chain_text(best),
                    source: RationaleSource::TreeOfThought,
                    score: self.nodes[best].score,
                    parsed,
                }
            }
            None => Rationale {
                user: self.user,
                text: String::new(),
                source: RationaleSource::TreeOfThought,
                score: None,
                parsed: false,
            },
        }
    }
}
