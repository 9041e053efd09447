//! Names: what the scope binds (`let`s, the layer index, inputs) beside the struct's dims, what a
//! name reads (with "did you mean", cycles, and the section a tensor belongs to), the encoder's
//! memory as a layer reads it, and the tensors computed but never read.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::Expr;

use super::{Binding, Interp, Memory, Val};
use crate::compose::constant::{self, Const};
use crate::suggest::closest;

impl Interp<'_> {
    pub(super) fn error(&mut self, span: Span, msg: impl std::fmt::Display) {
        if !self.quiet {
            self.cx.error(span, msg);
        }
    }

    pub(super) fn bind(&mut self, name: &str, val: Val, span: Span, used: bool) {
        let section = self.section;
        self.scope.push(Binding { name: name.to_string(), val, span, used, section });
    }

    pub(super) fn rebind(&mut self, name: &str, val: Val) {
        if let Some(b) = self.scope.iter_mut().rev().find(|b| b.name == name) {
            b.val = val;
            b.section = self.section;
            b.used = false;
        }
    }

    pub(super) fn lookup_quiet(&self, name: &str) -> Option<Val> {
        self.scope.iter().rev().find(|b| b.name == name).map(|b| b.val)
    }

    pub(super) fn mark_used(&mut self, name: &str) {
        if let Some(b) = self.scope.iter_mut().rev().find(|b| b.name == name) {
            b.used = true;
        }
    }

    pub(super) fn describe(&self, v: Val) -> String {
        match v {
            Val::Tensor(t) => format!("a tensor [S, {}]", self.cur.tensors[t].width),
            Val::Const(c) => c.describe(),
            Val::Input(_) => "an input's ids".to_string(),
            Val::Image => "the input images".to_string(),
            Val::Memory => "the encoder's memory".to_string(),
            Val::Poison => "an invalid value".to_string(),
        }
    }

    /// Reports the section's tensors that were computed and never read (only when the section
    /// had no other error: a failed expression may not have reached its operands).
    pub(super) fn unused_in_section(&mut self, section: usize) {
        if self.cx.len() > self.section_errors {
            return;
        }
        let unused: Vec<(String, Span)> = self
            .scope
            .iter()
            .filter(|b| b.section == section && !b.used && !b.name.starts_with('_'))
            .filter(|b| matches!(b.val, Val::Tensor(_)))
            .map(|b| (b.name.clone(), b.span))
            .collect();
        for (name, span) in unused {
            self.error(
                span,
                format!("`{name}` is computed but never used (prefix it with `_` if that is meant)"),
            );
        }
    }

    pub(super) fn constant(&mut self, e: &Expr) -> Option<Const> {
        let lookup = |name: &str| -> Option<Const> {
            if let Some(v) = self.dims.get(name) {
                return Some(Const::Int(*v as i128));
            }
            match self.lookup_quiet(name) {
                Some(Val::Const(c)) => Some(c),
                _ => None,
            }
        };
        match constant::eval(e, &lookup) {
            Ok(c) => Some(c),
            Err(err) => {
                self.error(err.span(), err);
                None
            }
        }
    }

    /// The value a name reads: a binding (marked used), or a dim. A name bound by a later `let`
    /// is a cycle; one bound only inside the loop is out of scope; anything else is unknown.
    pub(super) fn read_name(&mut self, p: &syn::ExprPath) -> Option<Val> {
        let Some(id) = p.path.get_ident() else {
            self.error(p.span(), "expected a name");
            return None;
        };
        let name = id.to_string();
        if let Some(b) = self.scope.iter_mut().rev().find(|b| b.name == name) {
            b.used = true;
            let (val, section) = (b.val, b.section);
            if matches!(val, Val::Memory) {
                return Some(self.memory_value(id));
            }
            if matches!(val, Val::Poison) {
                self.poisoned = true;
            }
            if matches!(val, Val::Tensor(_)) && section != self.section {
                self.error(id.span(), format!("`{name}` belongs to another part of the model: layers read only the stream, and only the stream leaves them"));
                return Some(Val::Poison);
            }
            return Some(val);
        }
        if let Some(v) = self.dims.get(&name) {
            return Some(Val::Const(Const::Int(*v as i128)));
        }
        if self.declared.iter().any(|(n, at)| *n == name && *at >= self.at) {
            self.error(id.span(), format!("`{name}` is used before its `let`: a value cannot depend on itself or on values computed after it (a cycle)"));
            return Some(Val::Poison);
        }
        if self.declared.iter().any(|(n, _)| *n == name) {
            self.error(id.span(), format!("`{name}` is not in scope here: values computed inside the layer loop stay there (only the stream leaves it)"));
            return Some(Val::Poison);
        }
        let mut known: Vec<&str> = self.scope.iter().map(|b| b.name.as_str()).collect();
        known.extend(self.dims.keys().map(String::as_str));
        let hint = closest(&name, &known).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default();
        self.error(
            id.span(),
            format!("cannot find `{name}`: it is not a tensor, dim or input defined before this point{hint}"),
        );
        Some(Val::Poison)
    }

    /// The memory read at `id`: a `[M, width]` tensor of the layer section, made on first read.
    fn memory_value(&mut self, id: &syn::Ident) -> Val {
        let Some(Memory { name, width: Some(width) }) = self.memory else {
            self.poisoned = true;
            return Val::Poison;
        };
        if self.section != 1 {
            self.error(
                id.span(),
                format!("`{id}` is read inside the layer loop, by cross-attention: `attention(q, linear({id}, …), linear({id}, …))`"),
            );
            return Val::Poison;
        }
        let t = match self.cur.memory {
            Some(t) => t,
            None => {
                let t = self.cur.memory_tensor(width, id.span(), name);
                self.cur.memory = Some(t);
                t
            }
        };
        Val::Tensor(t)
    }
}
