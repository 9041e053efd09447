//! The API of an image classifier (ViT): images in `[[[f32; W]; H]; C]` form, logits per image.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote, quote_spanned};

use super::{carve, layer_loop, rt};
use crate::graph::{Graph, Value};
use crate::spec::{Pooling, Spec};

pub fn methods(spec: &Spec, graph: &Graph, scratch_ty: &Ident, scratch: &[Value]) -> TokenStream {
    let rt = rt();
    let (name, vis) = (&spec.name, &spec.vis);
    let (layer_loop, layer_arg) = layer_loop(&graph.layer);
    let (Some(image), Some(classifier)) = (spec.image, spec.classifier) else {
        unreachable!("validation gives every image model its image input and classifier")
    };
    let d = spec.d_model;
    let (side, c, p, n, pw) =
        (image.image_size, image.channels, image.patch_size, image.patches(), image.patch_width());
    let labels = classifier.labels;
    let seq = spec.max_positions;
    let image_ty = format_ident!("{}Image", name);
    let image_doc = format!("One input image of `{name}`: {c} channels of {side} × {side}, channel-first.");
    // Spanned at the user's `labels`: a logits row is as wide as the label set.
    let logits_row = quote_spanned!(spec.vocab_span=> [f32; #labels]);
    let hidden_row = quote_spanned!(spec.d_model_span=> [f32; #d]);
    let carve = carve(
        spec,
        scratch_ty,
        scratch,
        &[
            (format_ident!("unfolded"), quote!(images.len() * #n * #pw)),
            (format_ident!("projected"), quote!(images.len() * #n * #d)),
            (format_ident!("pooled"), quote!(images.len() * #d)),
            (format_ident!("logits"), quote!(images.len() * #labels)),
        ],
    );
    let final_norm = graph.final_norm.as_ref().map(|_| quote!(self.final_norm.forward(x);));
    let pool = match classifier.pooling {
        Pooling::Cls => quote! {
            for (pooled, rows) in pooled.iter_mut().zip(x.chunks(#seq)) {
                *pooled = rows[0];
            }
        },
        Pooling::Mean => quote! {
            for (pooled, rows) in pooled.iter_mut().zip(x.chunks(#seq)) {
                #rt::kernels::pooling::mean_pool(rows, &[true; #seq], pooled);
            }
        },
    };
    quote! {
        #[doc = #image_doc]
        #vis type #image_ty = [[[f32; #side]; #side]; #c];

        impl #name {
            /// Image height and width.
            pub const IMAGE_SIZE: usize = #side;
            /// Side of a square patch.
            pub const PATCH_SIZE: usize = #p;
            /// Colour channels.
            pub const CHANNELS: usize = #c;
            /// Patches per image.
            pub const PATCHES: usize = #n;
            /// Classes the head scores.
            pub const LABELS: usize = #labels;

            /// Label logits, one row per image, written into `workspace`.
            pub fn classify_into<'w>(&self, images: &[&#image_ty], workspace: &'w mut #rt::Workspace) -> #rt::Result<&'w [#logits_row]> {
                self.run(images, workspace).map(|(_, logits)| logits)
            }

            /// [`Self::classify_into`] with a workspace kept by the model; returns owned rows.
            pub fn classify(&self, images: &[&#image_ty]) -> #rt::Result<::std::vec::Vec<#logits_row>> {
                self.workspaces.with(|ws| self.classify_into(images, ws).map(<[_]>::to_vec))
            }

            /// Final hidden states (after the last norm), `images.len() × MAX_POSITIONS` rows.
            pub fn forward_into<'w>(&self, images: &[&#image_ty], workspace: &'w mut #rt::Workspace) -> #rt::Result<&'w [#hidden_row]> {
                self.run(images, workspace).map(|(hidden, _)| hidden)
            }

            fn run<'w>(&self, images: &[&#image_ty], workspace: &'w mut #rt::Workspace) -> #rt::Result<(&'w [#hidden_row], &'w [#logits_row])> {
                let batch = #rt::Batch::uniform(images.len(), #seq)?;
                let batch = &batch;
                #carve
                let unfolded = unfolded.as_chunks_mut::<#pw>().0;
                let projected = projected.as_chunks_mut::<#d>().0;
                self.embeddings.forward(x, images, unfolded, projected, &self.threads);
                for #layer_loop {
                    layer.forward(x, batch, s, #layer_arg &self.threads);
                }
                #final_norm
                let pooled = pooled.as_chunks_mut::<#d>().0;
                #pool
                let logits = logits.as_chunks_mut::<#labels>().0;
                self.classifier.forward(pooled, logits, &self.threads);
                ::core::result::Result::Ok((x, logits))
            }
        }
    }
}
